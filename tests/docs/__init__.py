"""Tests of the manual: the generated reference pages are current, the site builds strictly."""
