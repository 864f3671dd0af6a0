"""Thin rclpy nodes: messages <-> core types, timers, parameters, QoS."""


def spin(make_node, args=None) -> None:
    """Every node's main(): init, build, spin until Ctrl-C / SIGTERM / shutdown, then tear down cleanly.
    A node may end its own run with SystemExit (e.g. the bridge after max_episodes).

    Single-threaded on purpose: rclpy's MultiThreadedExecutor busy-waits while a mutually exclusive group
    has work queued behind a running callback (measured: the planner's main thread spent 20 s in
    task.done() checks and answered 99 of ~400 frames), which starves the callback it waits for."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        if node is not None:
            getattr(node, 'shutdown', lambda: None)()
            node.destroy_node()
        rclpy.try_shutdown()
