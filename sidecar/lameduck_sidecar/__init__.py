"""lameduck sidecar: holds the app's preStop until traffic to the pod has stopped."""

__version__ = "0.1.0"
