"""Guards against a negative flywheel: data-quality and user-satisfaction monitors, and what they hold back."""
