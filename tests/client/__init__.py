"""Tests of pylog.client."""
