"""The request ⋈ action join: label rules (`labels`), the event-time state machine (`core`), the agent (`agent`)."""
