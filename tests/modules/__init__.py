"""Tests for powernode.modules."""
