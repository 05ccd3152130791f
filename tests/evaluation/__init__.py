"""Tests of hazyzoo.evaluation."""
