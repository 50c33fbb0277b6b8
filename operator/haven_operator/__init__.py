"""Haven Stream Operator: the kopf operator for LiveStream and Recording resources."""
