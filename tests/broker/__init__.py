"""Tests of pylog.broker."""
