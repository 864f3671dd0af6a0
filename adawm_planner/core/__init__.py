"""The algorithm, free of ROS: scene, BEV, world model, policy, planner, mismatch, adaptation."""
