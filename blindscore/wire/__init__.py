"""The wire format: conversions between domain objects and the generated blindscore.v1 messages."""
