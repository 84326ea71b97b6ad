"""A school's link against its contract: speed tests, SNMP rates, the test budget and the monitor."""
