"""Detection rules: Sigma, compiled once and run per event in the agent
(engine), and the same field map as a pySigma pipeline for SIEM queries."""
