"""llmfleet operator: the LLMDeployment API, its CRD generator and the kopf operator."""
