"""`flywheel demo`: the whole loop on one machine (`run`), its traffic and users (`traffic`), and the real-model mode against controls (`real`, `tasks`)."""
