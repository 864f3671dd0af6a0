"""The embedded tasks on the real simulator: every task resets and steps, seeded determinism, the map
frame, the control mapping, and that each shift pair's two tasks really differ."""
import gymnasium as gym
import numpy as np
import pytest

from adawm_planner.core import metrics
from adawm_planner.core.actions import discrete_to_control
from adawm_planner.core.bev import rasterize
from adawm_planner.sim import default_task, gym_id, make_env, shift_pairs, task_names
from adawm_planner.sim.envs import control_to_sim


@pytest.mark.parametrize('task', task_names())
def test_every_task_resets_and_steps(task):
    env = make_env(task, seed=1)
    obs, info = env.reset()
    assert env.observation_space.contains(obs) and env.action_space.n == 15
    assert obs['bev'][..., 3].any() and obs['bev'][..., 0].any() and obs['bev'][..., 4].any()
    for action in (7, 12, 2):
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs) and np.isfinite(reward)
    for key in ('success', 'collision', 'off_route', 'timeout', 'ttc', 'route_completion', 'r_waypoint', 'r_speed'):
        assert key in info
    env.close()


def test_gymnasium_ids_work():
    env = gym.make(gym_id('right_turn-moderate'), seed=3)
    obs, _ = env.reset()
    assert obs['bev'].shape == (64, 64, 5) and gym_id('right_turn-moderate') == 'AdaWM/RightTurn-moderate-v0'
    assert env.unwrapped.scene().ego.speed > 0
    env.close()


@pytest.mark.parametrize('task', task_names())
def test_every_registered_task_is_a_conformant_gymnasium_env(task):
    """gymnasium's own env checker on the env gymnasium.make builds, then steps through the wrappers (the
    task dict once lived in `spec`, which gymnasium overwrites: the first step() crashed)."""
    from gymnasium.utils.env_checker import check_env
    env = gym.make(gym_id(task))
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=1)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward)
    env.close()


def test_tasks_vectorise():
    envs = gym.make_vec(gym_id('right_turn-dense'), num_envs=2, vectorization_mode='sync')
    obs, _ = envs.reset(seed=[3, 4])
    assert obs['bev'].shape == (2, 64, 64, 5) and obs['ego'].shape == (2, 9)
    obs, reward, terminated, truncated, _ = envs.step(np.array([7, 7]))
    assert reward.shape == (2,) and np.isfinite(reward).all()
    envs.close()


def rollout(task, seed, actions, continuous=False):
    env = make_env(task, seed=seed, continuous=continuous)
    obs, _ = env.reset()
    trace = [obs['bev'].copy(), obs['ego'].copy()]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        s = env.scene()
        trace += [obs['bev'].copy(), obs['ego'].copy(), reward, s.agents.x.copy(), s.agents.y.copy()]
        if terminated or truncated:
            break
    return trace


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_seeded_determinism():
    actions = np.random.default_rng(0).integers(0, 15, 60)
    assert same(rollout('right_turn-dense', 5, actions), rollout('right_turn-dense', 5, actions))
    assert not same(rollout('right_turn-dense', 5, actions), rollout('right_turn-dense', 6, actions))
    cont = np.random.default_rng(1).uniform(-1, 1, (40, 2))
    assert same(rollout('roundabout-moderate', 2, cont, True), rollout('roundabout-moderate', 2, cont, True))


def test_reset_without_seed_continues_and_reseeding_repeats():
    env = make_env('lane_merge-moderate', seed=4)
    first = env.reset()[0]['bev']
    env.reset()
    again = env.reset(seed=4)[0]['bev']
    assert np.array_equal(first, again)


def test_map_frame_and_control_mapping():
    """Ego starts south of the junction driving north: in the ROS map frame that is yaw +90°, y growing."""
    env = make_env('right_turn-sparse', seed=0)
    env.reset()
    start = env.scene().ego
    assert start.yaw == pytest.approx(np.pi / 2) and start.y < 0
    for _ in range(10):
        env.step_control(0.5, 0.0, 0.0)
    straight = env.scene().ego
    assert straight.y > start.y + 3 and straight.x == pytest.approx(start.x) and straight.speed > start.speed
    for _ in range(10):
        env.step_control(0.0, 0.5, 0.0)            # CARLA: + steer turns right = yaw decreases in the map frame
    assert env.scene().ego.yaw < straight.yaw - 0.3
    for _ in range(40):
        env.step_control(0.0, 0.0, 1.0)            # braking stops the car, never reverses it
    assert env.scene().ego.speed == 0.0
    assert discrete_to_control(0, [-2, 0, 2], [-0.9, -0.3, 0, 0.3, 0.9]) == pytest.approx((0.0, -0.9, 2 / 3))
    assert discrete_to_control(14, [-2, 0, 2], [-0.9, -0.3, 0, 0.3, 0.9]) == pytest.approx((2 / 3, 0.9, 0.0))
    assert control_to_sim(2 / 3, 0.0, 0.0)[0] == pytest.approx(2.0)


def test_continuous_actions_on_roundabout_and_merge_and_ros_rate():
    for task in ('roundabout-moderate', 'lane_merge-moderate'):
        env = make_env(task, seed=0, continuous=True, dt=0.05)
        env.reset()
        assert env.max_steps == 600
        for _ in range(5):
            _, reward, *_ = env.step(np.array([0.3, 0.0], np.float32))
            assert np.isfinite(reward)


def test_obs_is_the_core_functions_of_the_scene():
    env = make_env(default_task(), seed=0)
    env.reset()
    obs, *_ = env.step(12)
    scene = env.scene()
    assert np.array_equal(obs['bev'], rasterize(scene))
    assert np.array_equal(obs['ego'], metrics.ego_features(scene, env.control, env.progress))


def test_shift_pairs_differ():
    pairs = shift_pairs()
    assert len(pairs) >= 4 and len({p['pretrain'] for p in pairs.values()}) == 1
    for name, pair in pairs.items():
        a, b = make_env(pair['pretrain'], seed=0), make_env(pair['finetune'], seed=0)
        assert a.task != b.task, name
        a.reset(), b.reset()
        sa, sb = a.scene(), b.scene()
        assert (len(sa.agents) != len(sb.agents) or sa.route.shape != sb.route.shape
                or not np.allclose(sa.route, sb.route) or a.task['drivers'] != b.task['drivers']
                or a.task['vehicle'] != b.task['vehicle'] or a.task['destination'] != b.task['destination']), name
        assert pair.get('known_side') in (None, 'model', 'policy', 'both'), name
        if pair.get('known_side') == 'model':    # only the ego's dynamics differ
            assert (a.task['vehicle'] != b.task['vehicle'] and a.task['traffic'] == b.task['traffic']
                    and np.allclose(sa.route, sb.route))
        if pair.get('known_side') == 'policy':   # same vehicle and map, another goal
            assert (a.task['vehicle'] == b.task['vehicle'] and a.task['geometry'] == b.task['geometry']
                    and a.task['destination'] != b.task['destination'])
    dense, moderate = make_env(pairs['density']['finetune'], seed=0), make_env(pairs['density']['pretrain'], seed=0)
    dense.reset(), moderate.reset()
    assert len(dense.scene().agents) > len(moderate.scene().agents)


def test_sim_cli_render_and_shift_check(tmp_path, capsys):
    from adawm_planner.cli import main
    assert main(['sim', 'render', 'roundabout-sparse', '--out', str(tmp_path / 'f.png'), '--steps', '3']) == 0
    assert main(['sim', 'render', 'right_turn-sparse', '--out', str(tmp_path / 'f.gif'), '--steps', '4']) == 0
    assert (tmp_path / 'f.png').stat().st_size > 1000 and (tmp_path / 'f.gif').stat().st_size > 1000
    assert main(['sim', 'shift-check', '--episodes', '1', '--pairs', 'behaviour']) == 0
    pair = shift_pairs()['behaviour']
    assert f"| behaviour | {pair['pretrain']} -> {pair['finetune']} |" in capsys.readouterr().out


def test_scripted_driver_completes_the_pretrain_task():
    from adawm_planner.sim.scripted import run_episode
    info = run_episode(make_env(default_task()), seed=0)
    assert info['success'] and info['route_completion'] > 0.9


def test_default_vehicle_is_the_unscaled_control_mapping():
    """Gains of 1 and no lag are bit-identical to the mapping without a vehicle (the pre-vehicle behaviour)."""
    from adawm_planner.sim import tasks_config
    default = tasks_config()['vehicle']
    assert default == {'steer_gain': 1.0, 'throttle_gain': 1.0, 'brake_gain': 1.0, 'lag': 0.0}
    assert make_env(default_task(), seed=0).task['vehicle'] == default
    for throttle, steer, brake in np.random.default_rng(0).uniform(-0.2, 1.2, (200, 3)):
        assert control_to_sim(throttle, steer - 0.5, brake, default) == control_to_sim(throttle, steer - 0.5, brake)


def response(vehicle: dict, controls) -> list:
    """Ego (speed, yaw) after each control on the sparse right turn, with the given vehicle fields."""
    from adawm_planner.sim import tasks_config
    env = make_env('right_turn-sparse', seed=0, vehicle={**tasks_config()['vehicle'], **vehicle})
    env.reset()
    states = []
    for control in controls:
        env.step_control(*control)
        states.append((env.scene().ego.speed, env.scene().ego.yaw))
    return states


def test_shifted_vehicles_respond_differently():
    steer = [(0.0, 0.5, 0.0)] * 10
    normal, slow = response({}, steer), response({'steer_gain': 0.5}, steer)
    start_yaw = np.pi / 2
    turned, turned_slow = start_yaw - normal[-1][1], start_yaw - slow[-1][1]
    assert turned > 0.3 and 0.35 * turned < turned_slow < 0.65 * turned       # about half the yaw change
    throttle = [(1.0, 0.0, 0.0)] * 8
    normal, lagged = response({}, throttle), response({'lag': 0.3}, throttle)
    start_speed = make_env('right_turn-sparse').task['start_speed']
    assert [s for s, _ in lagged[:3]] == pytest.approx([start_speed] * 3) and normal[0][0] > start_speed
    assert [s for s, _ in lagged[3:]] == pytest.approx([s for s, _ in normal[:5]])   # same response, 3 steps later
    brake = [(0.0, 0.0, 1.0)] * 5
    normal, weak = response({}, brake), response({'brake_gain': 0.5}, brake)
    assert normal[0][0] < weak[0][0] < response({}, [(0.0, 0.0, 0.0)])[0][0]


def test_the_lag_is_a_time_whatever_the_step_length():
    """The lagged car coasts for 0.5 s at 10 Hz (the training env) and behind the 20 Hz ROS bridge alike."""
    for dt in (0.1, 0.05):
        env = make_env('right_turn_lagged-sparse', seed=0, dt=dt)
        env.reset()
        start = env.scene().ego.speed
        speeds = []
        for _ in range(round(1.0 / dt)):
            env.step_control(1.0, 0.0, 0.0)
            speeds.append(env.scene().ego.speed)
        coasting = round(0.5 / dt)
        assert speeds[:coasting] == pytest.approx([start] * coasting) and speeds[coasting] > start, dt
    with pytest.raises(ValueError, match='vehicle.lag 0.25 s is not a whole number of 0.1 s steps'):
        make_env('right_turn_lagged-sparse', vehicle={**make_env('right_turn-sparse').task['vehicle'], 'lag': 0.25})


def test_a_list_of_exits_draws_one_per_episode_and_keeps_the_traffic():
    env, single = make_env('right_or_straight-sparse', seed=0), make_env('right_turn-sparse', seed=0)
    exits = set()
    for seed in range(12):
        env.reset(seed=seed)
        single.reset(seed=seed)
        exits.add(env.sim.destination)
        assert env.route[-1].tolist() != single.route[-1].tolist() or env.sim.destination == 'o3'
        assert np.array_equal(env.scene().agents.x, single.scene().agents.x)   # drawn after the traffic
    assert exits == {'o3', 'o2'}


def test_a_task_name_may_change_fields_of_a_named_task():
    from adawm_planner.sim import tasks_config
    from adawm_planner.sim.envs import resolve
    config = tasks_config()
    assert resolve(config, 'right_turn-moderate@lag=0.5') == resolve(config, 'right_turn_lagged-moderate')
    spec = resolve(config, 'right_turn-dense-aggressive@steer_gain=0.5, traffic.initial_vehicle_count=7,'
                           'drivers.politeness=0.2,drivers.yields=true,v_des=5')
    assert spec['vehicle']['steer_gain'] == 0.5 and spec['vehicle']['lag'] == 0.0
    assert spec['traffic'] == {'initial_vehicle_count': 7, 'spawn_rate': 1.5} and spec['v_des'] == 5.0
    assert spec['drivers']['politeness'] == 0.2 and spec['drivers']['yields'] is True
    assert config['drivers']['aggressive']['politeness'] == 0.0   # the shared config is left as it was
    for name, says in [('right_turn-moderate@wheels=3', "unknown override 'wheels'; known: steer_gain"),
                       ('right_turn-moderate@lag', 'is not FIELD=VALUE'),
                       ('right_turn-moderate@lag=soon', 'lag takes a number'),
                       ('right_turn-moderate@lag=-0.2', 'of the sign of its default'),
                       ('right_turn-moderate@lag=inf', 'finite'),
                       ('right_turn-moderate@traffic.initial_vehicle_count=2.5', 'takes a whole number'),
                       ('right_turn-moderate@drivers.yields=2', 'takes true or false')]:
        with pytest.raises((KeyError, ValueError), match=says):
            resolve(config, name)


def test_an_overridden_task_drives_as_its_named_twin():
    named, overridden = make_env('right_turn_lagged-moderate', seed=3), make_env('right_turn-moderate@lag=0.5', seed=3)
    for env in (named, overridden):
        env.reset(seed=3)
    for action in [12, 12, 7, 7, 2, 12, 12, 12]:
        a, b = named.step(action), overridden.step(action)
        assert np.array_equal(a[0]['bev'], b[0]['bev']) and a[1] == b[1]
