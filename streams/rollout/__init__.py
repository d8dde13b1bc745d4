"""A/B rollout of candidate models: assignment, the sequential test, ramp, promotion, rollback."""
