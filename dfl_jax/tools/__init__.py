"""Tools: benchmark, compile for absent accelerators, environment check, parameter summary."""
