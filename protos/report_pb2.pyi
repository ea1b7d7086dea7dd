import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_STATUS_UNSPECIFIED: _ClassVar[ClientStatus]
    OK: _ClassVar[ClientStatus]
    FAILED: _ClassVar[ClientStatus]
    REJECTED: _ClassVar[ClientStatus]
CLIENT_STATUS_UNSPECIFIED: ClientStatus
OK: ClientStatus
FAILED: ClientStatus
REJECTED: ClientStatus

class ClientResult(_message.Message):
    __slots__ = ("node_id", "partition_id", "status", "reason", "num_examples", "train_loss", "kernel_seconds", "fuel_used", "bytes_uploaded", "bytes_downloaded", "delta_norm", "cosine_to_update", "aggregation_weight", "selected", "aggregation_note", "eval_loss", "eval_accuracy", "eval_num_examples", "eval_status", "claimed_num_examples", "num_examples_note", "clip_factor", "injected_fault", "attack", "claimed_eval_num_examples", "sim_seconds", "sim_download_seconds", "sim_compute_seconds", "sim_upload_seconds", "fuel_budget", "steps_done", "steps_planned", "device_status", "kernel_sha256")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FUEL_USED_FIELD_NUMBER: _ClassVar[int]
    BYTES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWNLOADED_FIELD_NUMBER: _ClassVar[int]
    DELTA_NORM_FIELD_NUMBER: _ClassVar[int]
    COSINE_TO_UPDATE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_NOTE_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EVAL_NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EVAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_NOTE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FACTOR_FIELD_NUMBER: _ClassVar[int]
    INJECTED_FAULT_FIELD_NUMBER: _ClassVar[int]
    ATTACK_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_EVAL_NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SIM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIM_DOWNLOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIM_COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIM_UPLOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FUEL_BUDGET_FIELD_NUMBER: _ClassVar[int]
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    STEPS_PLANNED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATUS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    partition_id: int
    status: ClientStatus
    reason: str
    num_examples: int
    train_loss: float
    kernel_seconds: float
    fuel_used: int
    bytes_uploaded: int
    bytes_downloaded: int
    delta_norm: float
    cosine_to_update: float
    aggregation_weight: float
    selected: bool
    aggregation_note: str
    eval_loss: float
    eval_accuracy: float
    eval_num_examples: int
    eval_status: ClientStatus
    claimed_num_examples: int
    num_examples_note: str
    clip_factor: float
    injected_fault: str
    attack: str
    claimed_eval_num_examples: int
    sim_seconds: float
    sim_download_seconds: float
    sim_compute_seconds: float
    sim_upload_seconds: float
    fuel_budget: int
    steps_done: int
    steps_planned: int
    device_status: str
    kernel_sha256: str
    def __init__(self, node_id: _Optional[str] = ..., partition_id: _Optional[int] = ..., status: _Optional[_Union[ClientStatus, str]] = ..., reason: _Optional[str] = ..., num_examples: _Optional[int] = ..., train_loss: _Optional[float] = ..., kernel_seconds: _Optional[float] = ..., fuel_used: _Optional[int] = ..., bytes_uploaded: _Optional[int] = ..., bytes_downloaded: _Optional[int] = ..., delta_norm: _Optional[float] = ..., cosine_to_update: _Optional[float] = ..., aggregation_weight: _Optional[float] = ..., selected: _Optional[bool] = ..., aggregation_note: _Optional[str] = ..., eval_loss: _Optional[float] = ..., eval_accuracy: _Optional[float] = ..., eval_num_examples: _Optional[int] = ..., eval_status: _Optional[_Union[ClientStatus, str]] = ..., claimed_num_examples: _Optional[int] = ..., num_examples_note: _Optional[str] = ..., clip_factor: _Optional[float] = ..., injected_fault: _Optional[str] = ..., attack: _Optional[str] = ..., claimed_eval_num_examples: _Optional[int] = ..., sim_seconds: _Optional[float] = ..., sim_download_seconds: _Optional[float] = ..., sim_compute_seconds: _Optional[float] = ..., sim_upload_seconds: _Optional[float] = ..., fuel_budget: _Optional[int] = ..., steps_done: _Optional[int] = ..., steps_planned: _Optional[int] = ..., device_status: _Optional[str] = ..., kernel_sha256: _Optional[str] = ...) -> None: ...

class RoundReport(_message.Message):
    __slots__ = ("round", "clients_sampled", "clients_succeeded", "clients_failed", "clients_rejected", "train_loss", "federated_eval_loss", "federated_eval_accuracy", "central_loss", "central_accuracy", "bytes_uploaded", "bytes_downloaded", "wall_seconds", "update_norm", "sampled_node_ids", "clients", "clients_clipped", "clients_weight_clipped", "sim_round_seconds", "sim_elapsed_seconds", "stragglers", "clients_dropped", "clients_partial", "clients_offline", "model_unchanged_reason")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CENTRAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    CENTRAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BYTES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWNLOADED_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_NORM_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_CLIPPED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_WEIGHT_CLIPPED_FIELD_NUMBER: _ClassVar[int]
    SIM_ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIM_ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STRAGGLERS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_OFFLINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_UNCHANGED_REASON_FIELD_NUMBER: _ClassVar[int]
    round: int
    clients_sampled: int
    clients_succeeded: int
    clients_failed: int
    clients_rejected: int
    train_loss: float
    federated_eval_loss: float
    federated_eval_accuracy: float
    central_loss: float
    central_accuracy: float
    bytes_uploaded: int
    bytes_downloaded: int
    wall_seconds: float
    update_norm: float
    sampled_node_ids: _containers.RepeatedScalarFieldContainer[str]
    clients: _containers.RepeatedCompositeFieldContainer[ClientResult]
    clients_clipped: int
    clients_weight_clipped: int
    sim_round_seconds: float
    sim_elapsed_seconds: float
    stragglers: int
    clients_dropped: int
    clients_partial: int
    clients_offline: int
    model_unchanged_reason: str
    def __init__(self, round: _Optional[int] = ..., clients_sampled: _Optional[int] = ..., clients_succeeded: _Optional[int] = ..., clients_failed: _Optional[int] = ..., clients_rejected: _Optional[int] = ..., train_loss: _Optional[float] = ..., federated_eval_loss: _Optional[float] = ..., federated_eval_accuracy: _Optional[float] = ..., central_loss: _Optional[float] = ..., central_accuracy: _Optional[float] = ..., bytes_uploaded: _Optional[int] = ..., bytes_downloaded: _Optional[int] = ..., wall_seconds: _Optional[float] = ..., update_norm: _Optional[float] = ..., sampled_node_ids: _Optional[_Iterable[str]] = ..., clients: _Optional[_Iterable[_Union[ClientResult, _Mapping]]] = ..., clients_clipped: _Optional[int] = ..., clients_weight_clipped: _Optional[int] = ..., sim_round_seconds: _Optional[float] = ..., sim_elapsed_seconds: _Optional[float] = ..., stragglers: _Optional[int] = ..., clients_dropped: _Optional[int] = ..., clients_partial: _Optional[int] = ..., clients_offline: _Optional[int] = ..., model_unchanged_reason: _Optional[str] = ...) -> None: ...

class Versions(_message.Message):
    __slots__ = ("sandflower", "flwr", "wasmtime", "python")
    SANDFLOWER_FIELD_NUMBER: _ClassVar[int]
    FLWR_FIELD_NUMBER: _ClassVar[int]
    WASMTIME_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    sandflower: str
    flwr: str
    wasmtime: str
    python: str
    def __init__(self, sandflower: _Optional[str] = ..., flwr: _Optional[str] = ..., wasmtime: _Optional[str] = ..., python: _Optional[str] = ...) -> None: ...

class RunReport(_message.Message):
    __slots__ = ("scenario", "seed", "status", "error", "engine", "config", "versions", "kernel_sha256", "started_at", "finished_at", "num_rounds", "total_bytes_uploaded", "total_bytes_downloaded", "final_model_sha256", "final_central_loss", "final_central_accuracy", "final_federated_eval_accuracy", "rounds", "resumes", "checkpoint_seconds", "config_integer_keys")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_DOWNLOADED_FIELD_NUMBER: _ClassVar[int]
    FINAL_MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    FINAL_CENTRAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_CENTRAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FINAL_FEDERATED_EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_INTEGER_KEYS_FIELD_NUMBER: _ClassVar[int]
    scenario: str
    seed: int
    status: str
    error: str
    engine: str
    config: _struct_pb2.Struct
    versions: Versions
    kernel_sha256: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    num_rounds: int
    total_bytes_uploaded: int
    total_bytes_downloaded: int
    final_model_sha256: str
    final_central_loss: float
    final_central_accuracy: float
    final_federated_eval_accuracy: float
    rounds: _containers.RepeatedCompositeFieldContainer[RoundReport]
    resumes: _containers.RepeatedCompositeFieldContainer[ResumeEvent]
    checkpoint_seconds: float
    config_integer_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, scenario: _Optional[str] = ..., seed: _Optional[int] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., engine: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., versions: _Optional[_Union[Versions, _Mapping]] = ..., kernel_sha256: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., num_rounds: _Optional[int] = ..., total_bytes_uploaded: _Optional[int] = ..., total_bytes_downloaded: _Optional[int] = ..., final_model_sha256: _Optional[str] = ..., final_central_loss: _Optional[float] = ..., final_central_accuracy: _Optional[float] = ..., final_federated_eval_accuracy: _Optional[float] = ..., rounds: _Optional[_Iterable[_Union[RoundReport, _Mapping]]] = ..., resumes: _Optional[_Iterable[_Union[ResumeEvent, _Mapping]]] = ..., checkpoint_seconds: _Optional[float] = ..., config_integer_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ResumeEvent(_message.Message):
    __slots__ = ("resumed_at", "from_round", "checkpoint", "previous_status", "previous_num_rounds", "engine", "refused_checkpoints")
    RESUMED_AT_FIELD_NUMBER: _ClassVar[int]
    FROM_ROUND_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    resumed_at: _timestamp_pb2.Timestamp
    from_round: int
    checkpoint: str
    previous_status: str
    previous_num_rounds: int
    engine: str
    refused_checkpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resumed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., from_round: _Optional[int] = ..., checkpoint: _Optional[str] = ..., previous_status: _Optional[str] = ..., previous_num_rounds: _Optional[int] = ..., engine: _Optional[str] = ..., refused_checkpoints: _Optional[_Iterable[str]] = ...) -> None: ...
