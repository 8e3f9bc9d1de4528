"""Application Auto Scaling for SageMaker endpoint variants: the API operations, and the
fleet-singleton autoscaler that evaluates alarms and runs scaling policies."""
