"""Property and fuzz tests of the parsers that face school LANs and operators (hypothesis, bounded in time)."""
