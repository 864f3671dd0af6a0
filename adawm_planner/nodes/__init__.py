"""Thin rclpy nodes: messages <-> core types, timers, parameters, QoS."""


def spin(make_node, args=None) -> None:
    """Every node's main(): init, build, spin until Ctrl-C / SIGTERM / shutdown, then tear down cleanly.
    A node ends its own run with SystemExit: SystemExit(0) is a clean finish (the bridge after max_episodes),
    SystemExit('message') a failure to start (e.g. no checkpoint): the message goes to stderr, exit code 1.

    Single-threaded on purpose: rclpy's MultiThreadedExecutor busy-waits while a mutually exclusive group
    has work queued behind a running callback (measured: the planner's main thread spent 20 s in
    task.done() checks and answered 99 of ~400 frames), which starves the callback it waits for."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    import sys
    import threading

    rclpy.init(args=args)
    stopped = threading.Event()
    rclpy.get_default_context().on_shutdown(stopped.set)
    node = None
    failure = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as exc:
        failure = exc.code if isinstance(exc.code, str) else None
    except Exception:
        # A SIGINT/SIGTERM surfaces as whatever the executor was doing when it came: RCLError ('the given
        # context is not valid') between two waits, or a RuntimeError out of take_message (the interrupt
        # raised inside pybind11's conversion; seen under load in test_rollback_live). rclpy shuts the
        # context down from its own signal thread, at once or a moment later: a stop, not a crash, if so.
        # (on_shutdown fires only for a shutdown from Python, hence the second look at rclpy.ok().)
        if rclpy.ok():
            stopped.wait(2.0)
            if rclpy.ok():
                raise
    finally:
        if node is not None:
            getattr(node, 'shutdown', lambda: None)()
            node.destroy_node()
        rclpy.try_shutdown()
    if failure:
        print(failure, file=sys.stderr, flush=True)
        sys.exit(1)
