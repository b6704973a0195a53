"""Generated protobuf and gRPC code for the blindscore.v1 wire protocol (do not edit; see scripts/gen_protos.py)."""
