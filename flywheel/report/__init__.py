"""`flywheel report`: the flywheel's velocity, cycle by cycle, as text, JSON and an HTML page with plots."""
