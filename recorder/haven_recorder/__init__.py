"""Haven stream pod: one LiveKit connection fanned out to viewers and recorders."""
