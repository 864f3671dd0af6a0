"""Thin rclpy nodes: messages <-> core types, timers, parameters, QoS."""


def spin(make_node, threads: int = 1, args=None) -> None:
    """Every node's main(): init, build, spin until Ctrl-C / SIGTERM / shutdown, then tear down cleanly.
    A node may end its own run with SystemExit (e.g. the bridge after max_episodes)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        if node is not None:
            getattr(node, 'shutdown', lambda: None)()
            node.destroy_node()
        rclpy.try_shutdown()
