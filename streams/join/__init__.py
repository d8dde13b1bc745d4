"""The request ⋈ action join: label rules (`labels`), the event-time state machine (`core`), its state (`state`), the batch loop in the worker (`service`)."""
