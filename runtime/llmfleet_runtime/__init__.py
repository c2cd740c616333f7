"""llmfleet runtime: what runs in the engine pods, the launcher and the engine simulator."""
