"""The dataset builder: gate outputs cut into event-time windows, sealed into versioned training datasets."""
