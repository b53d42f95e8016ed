"""Tests of the module supply chain: artifacts, signatures and trust."""
