"""Human review: prioritised sampling, the Redis review queue, the review page, verdicts and calibration."""
