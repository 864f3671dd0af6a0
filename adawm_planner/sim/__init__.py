"""Embedded driving tasks (gymnasium over highway-env) and their Scene source; free of ROS."""
