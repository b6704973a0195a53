"""The application layer: the command line, the demo, CSV scoring, local three-node networks, benchmarks."""
