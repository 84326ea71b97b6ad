"""Whether devices answer: the scheduler (when each probe runs) and the state (hysteresis, roll-ups, findings)."""
