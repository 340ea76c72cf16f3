"""Shared pieces of tether's benchmark harness and demo: processes, upstream, load, reports."""
