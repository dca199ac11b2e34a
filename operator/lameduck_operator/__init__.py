"""lameduck operator: applies GracefulPolicies to the Deployments they select."""

__version__ = "0.1.0"
