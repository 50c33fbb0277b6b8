"""The end-to-end suite for any cluster: `make e2e KUBECONFIG=...` (see README, "Run the e2e
suite on your cluster"). It reaches the cluster only through the kubeconfig: the Kubernetes API,
helm, and kubectl port-forward. It imports nothing from the local cluster's harness but the
test signal's decoders (tests/unit/test_e2e_isolation.py checks this)."""
