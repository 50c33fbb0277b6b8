"""A real local Kubernetes control plane, livekit-server and test publisher for tests and demos."""
