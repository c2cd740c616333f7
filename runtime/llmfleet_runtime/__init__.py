"""llmfleet runtime: the engine launcher, the engine simulator and the gateway."""
