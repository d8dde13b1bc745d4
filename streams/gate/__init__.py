"""The quality gate: one pipeline of small named filters between the join and everything downstream.

Every candidate gets a decision (passed or rejected) with its scores and reason codes; personal
data is redacted here, so nothing after the gate holds it in clear.
"""
