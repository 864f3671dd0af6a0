"""The interface packages built by `make setup` import, and carry the fields the stack relies on."""
import pytest

pytestmark = pytest.mark.ros


def test_carla_msgs_fields_match_the_bridge():
    from carla_msgs.msg import (CarlaCollisionEvent, CarlaEgoVehicleControl, CarlaEgoVehicleInfo,
                                CarlaEgoVehicleInfoWheel, CarlaEgoVehicleStatus, CarlaStatus, CarlaWorldInfo)

    def fields(cls):
        return list(cls.get_fields_and_field_types().items())

    assert fields(CarlaEgoVehicleControl) == [
        ('header', 'std_msgs/Header'), ('throttle', 'float'), ('steer', 'float'), ('brake', 'float'),
        ('hand_brake', 'boolean'), ('reverse', 'boolean'), ('gear', 'int32'), ('manual_gear_shift', 'boolean')]
    assert fields(CarlaEgoVehicleStatus) == [
        ('header', 'std_msgs/Header'), ('velocity', 'float'), ('acceleration', 'geometry_msgs/Accel'),
        ('orientation', 'geometry_msgs/Quaternion'), ('control', 'carla_msgs/CarlaEgoVehicleControl')]
    assert [name for name, _ in fields(CarlaEgoVehicleInfo)] == [
        'id', 'type', 'rolename', 'wheels', 'max_rpm', 'moi', 'damping_rate_full_throttle',
        'damping_rate_zero_throttle_clutch_engaged', 'damping_rate_zero_throttle_clutch_disengaged',
        'use_gear_autobox', 'gear_switch_time', 'clutch_strength', 'mass', 'drag_coefficient', 'center_of_mass']
    assert dict(fields(CarlaEgoVehicleInfo))['wheels'] == 'sequence<carla_msgs/CarlaEgoVehicleInfoWheel>'
    assert 'position' in CarlaEgoVehicleInfoWheel.get_fields_and_field_types()
    assert fields(CarlaCollisionEvent) == [
        ('header', 'std_msgs/Header'), ('other_actor_id', 'uint32'), ('normal_impulse', 'geometry_msgs/Vector3')]
    assert fields(CarlaWorldInfo) == [('map_name', 'string'), ('opendrive', 'string')]
    assert fields(CarlaStatus) == [('frame', 'uint64'), ('fixed_delta_seconds', 'float'),
                                   ('synchronous_mode', 'boolean'), ('synchronous_mode_running', 'boolean')]


def test_derived_object_msgs_constants_and_fields():
    from derived_object_msgs.msg import Object, ObjectArray

    assert (Object.OBJECT_DETECTED, Object.OBJECT_TRACKED) == (0, 1)
    assert (Object.CLASSIFICATION_UNKNOWN, Object.CLASSIFICATION_CAR, Object.CLASSIFICATION_SIGN) == (0, 6, 11)
    assert list(Object.get_fields_and_field_types()) == [
        'header', 'id', 'detection_level', 'object_classified', 'pose', 'twist', 'accel', 'polygon', 'shape',
        'classification', 'classification_certainty', 'classification_age']
    assert ObjectArray.get_fields_and_field_types()['objects'] == 'sequence<derived_object_msgs/Object>'


def test_adawm_msgs_carry_decisions_and_adapter_states():
    from adawm_msgs.msg import AdapterStatus, MismatchReport

    assert {MismatchReport.DECISION_NONE, MismatchReport.DECISION_UPDATE_MODEL,
            MismatchReport.DECISION_UPDATE_POLICY} == {0, 1, 2}
    report = MismatchReport(model_mismatch=0.3, policy_mismatch=0.05, threshold_c=2.0,
                            decision=MismatchReport.DECISION_UPDATE_MODEL, finetune_step=7, adapter_version=3)
    assert report.decision == MismatchReport.DECISION_UPDATE_MODEL
    status = AdapterStatus(version=3, target=AdapterStatus.TARGET_POLICY, rank=8, trainable_parameters=4096,
                           sha256='ab' * 32, state=AdapterStatus.STATE_REJECTED, reason='shape mismatch')
    assert status.reason == 'shape mismatch'
    assert {AdapterStatus.STATE_APPLIED, AdapterStatus.STATE_REJECTED, AdapterStatus.STATE_ROLLED_BACK} == {0, 1, 2}


def test_episode_outcome_names_every_ending():
    from adawm_msgs.msg import EpisodeOutcome

    endings = {EpisodeOutcome.OUTCOME_SUCCESS, EpisodeOutcome.OUTCOME_COLLISION, EpisodeOutcome.OUTCOME_OFF_ROUTE,
               EpisodeOutcome.OUTCOME_TIMEOUT, EpisodeOutcome.OUTCOME_RESET}
    assert len(endings) == 5
    assert EpisodeOutcome(task='right_turn', outcome=EpisodeOutcome.OUTCOME_TIMEOUT, min_ttc=2.5).min_ttc == 2.5
