# The wire protocol of Asteroid: every message that crosses a process
# boundary is one Envelope. Its union lists every message kind. The codec
# (codec.h) is the only code that turns these into bytes and back, with size,
# traversal and nesting limits on every read of untrusted bytes.
#
# Conventions: rounds count from 0 across epochs; a micro-batch has
# `microbatchSize` samples numbered 0..microbatchSize-1; a SampleRange is
# half-open [begin, end) inside one micro-batch. Stages and group members are
# 0-based indices into the plan. Times are microseconds since the Unix epoch
# of the sender's clock.

@0xaed2cdd610b2db27;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("asteroid::wire");

# A dense tensor in row-major order, little-endian. `data` holds exactly
# product(shape) * size(dtype) bytes for float32, int64, float16 and
# bfloat16. int8Block and int4Block are float32 values quantised by the wire
# codec (wire_codec.h): rows are shape[0] (one row for rank < 2), each row
# cut in blocks of `blockSize` values with one float32 scale per block in
# `scales`; `data` holds one int8 per value, or two int4 per byte (low
# nibble first).
struct Tensor {
  dtype @0 :DType;
  shape @1 :List(Int64);
  data @2 :Data;
  blockSize @3 :UInt32;   # int8Block / int4Block only
  scales @4 :Data;        # int8Block / int4Block only: float32 per block

  enum DType {
    float32 @0;
    int64 @1;
    float16 @2;     # IEEE half (wire codec fp16)
    bfloat16 @3;    # wire codec bf16
    int8Block @4;   # wire codec int8
    int4Block @5;   # wire codec int4
  }
}

struct SampleRange {
  begin @0 :UInt32;
  end @1 :UInt32;
}

# Forward: a slice of one micro-batch's activations from a member of stage
# `fromStage` to the member of the next stage that owns these samples. The
# first stage also forwards the labels, which travel with the samples to the
# last stage.
struct Activation {
  round @0 :UInt64;
  microbatch @1 :UInt32;
  samples @2 :SampleRange;
  fromStage @3 :UInt32;
  fromMember @4 :UInt32;
  tensor @5 :Tensor;
  labels @6 :Tensor;    # int64 [samples]
  deployment @7 :UInt64;  # the sender's StageAssignment.deployment
}

# Backward: the gradient of a slice of activations, sent upstream to the
# member of the previous stage that produced these samples.
struct Gradient {
  round @0 :UInt64;
  microbatch @1 :UInt32;
  samples @2 :SampleRange;
  fromStage @3 :UInt32;
  fromMember @4 :UInt32;
  tensor @5 :Tensor;
  deployment @6 :UInt64;  # the sender's StageAssignment.deployment
}

# One step of a group's ring all-reduce of the flattened gradients: chunk
# `chunk` after `step` reduce-scatter steps (step < groupSize-1) or
# all-gather steps (step >= groupSize-1).
struct ReduceChunk {
  round @0 :UInt64;
  step @1 :UInt32;
  chunk @2 :UInt32;
  fromMember @3 :UInt32;
  tensor @4 :Tensor;
  bucket @5 :UInt32;  # the all-reduce bucket (actors/all_reduce.h) this chunk belongs to
  deployment @6 :UInt64;  # the sender's StageAssignment.deployment
}

struct OptimizerSpec {
  kind @0 :Kind;
  lr @1 :Float64;
  momentum @2 :Float64;
  beta1 @3 :Float64;
  beta2 @4 :Float64;
  eps @5 :Float64;
  weightDecay @6 :Float64;

  enum Kind {
    sgd @0;
    momentum @1;
    adam @2;
  }
}

struct GroupMember {
  deviceId @0 :Text;
  samples @1 :UInt32;   # y_d: samples of every micro-batch
}

# Deploys one member of one stage: which layers, with whom, how to train.
# The actor handles of the neighbouring groups travel beside this envelope
# as CAF references (the only thing on the wire that is not Cap'n Proto:
# they are CAF's own routing), in the order of the member lists below.
struct StageAssignment {
  jobId @0 :Text;
  model @1 :Text;
  stage @2 :UInt32;
  stageCount @3 :UInt32;
  layerBegin @4 :UInt32;
  layerEnd @5 :UInt32;
  member @6 :UInt32;                 # my index in `group`
  group @7 :List(GroupMember);       # my stage's group
  prevGroup @8 :List(GroupMember);   # empty on the first stage
  nextGroup @9 :List(GroupMember);   # empty on the last stage
  batch @10 :UInt32;
  microbatches @11 :UInt32;
  microbatchSize @12 :UInt32;
  optimizer @13 :OptimizerSpec;
  seed @14 :UInt64;                  # model initialisation
  dataSeed @15 :UInt64;              # sample order
  firstRound @16 :UInt64;            # the next round to run
  initialState @17 :StageState;      # weights to start from; empty: from seed
  trace @18 :Bool;                   # record trace events
  requiredMemoryBytes @19 :UInt64;   # the planner's estimate for this member
                                     # (weights, optimizer, stash, replicas);
                                     # the node refuses what exceeds its budget
  replicateEvery @20 :UInt32;        # send committed state to the replica
                                     # holder every N rounds (0: never; the
                                     # holder's node actor travels beside)
  centralEvery @21 :UInt32;          # ... and to the coordinator (0: never)
  # The wire (wire_codec.h): how activations to the next stage and their
  # gradients back are encoded, the same for the boundary to the previous
  # stage, and this group's all-reduce chunks; values per int8/int4 scale.
  codecToNext @22 :WireCodec;
  codecFromPrev @23 :WireCodec;
  codecAllReduce @24 :WireCodec;
  codecBlock @25 :UInt32 = 64;       # kDefaultBlock
  # Which deployment of the job this is (it grows with every deployment,
  # redeployment and restart in place). A member stamps its activations,
  # gradients and all-reduce chunks with it and drops those stamped with
  # another: a member kept across a recovery never takes the data its peers
  # sent for the rounds the recovery aborted.
  deployment @26 :UInt64;
  # Restart in place: start from the committed state this member's node
  # keeps of the job's layers [layerBegin, layerEnd) at round firstRound - 1
  # (initialState stays empty: the state does not travel).
  resumeFromKept @27 :Bool;
}

enum WireCodec {
  fp32 @0;
  fp16 @1;
  bf16 @2;
  int8 @3;
  int4 @4;
}

# A stage's weights and optimizer state after committed round `round`.
struct StageState {
  round @0 :UInt64;
  layerBegin @1 :UInt32;
  layerEnd @2 :UInt32;
  weights @3 :Tensor;            # flat float32
  optimizerState @4 :Tensor;     # flat float32 (empty for plain SGD)
  optimizerSteps @5 :UInt64;
  jobId @6 :Text;                # set on replicas: whose state this is
}

# Round control between the coordinator and the stage members.
struct RoundControl {
  kind @0 :Kind;
  round @1 :UInt64;
  # For `done` (member -> coordinator): what this member saw in the round.
  lossSum @2 :Float64;     # sum of per-sample loss (last stage only)
  samples @3 :UInt32;      # samples whose loss is in lossSum
  correct @4 :UInt32;      # of those, correctly classified
  stage @5 :UInt32;
  member @6 :UInt32;

  enum Kind {
    start @0;     # coordinator -> members: run this round
    done @1;      # member -> coordinator: stepped the optimizer for this round
    commit @2;    # coordinator -> members: the round counts; keep its state
    abort @3;     # coordinator -> members: drop the rounds not committed, roll back
    replicated @4;  # node -> member -> coordinator: the replica of this
                    # round's state is stored on its holder
    replicate @5;   # coordinator -> member: send your state of this round
                    # to your replica holder
    restarted @6;   # node -> coordinator, with two actor handles beside
                    # the envelope (the stage actor that failed on its
                    # own, the node's replacement; none: the node gave
                    # up): the device supervisor restarted stage/member
  }
}

struct Heartbeat {
  nodeId @0 :Text;
  sequence @1 :UInt64;
  sentUs @2 :Int64;
  unreachable @3 :List(Text);   # a node's reply: the pipeline peers it has not
                                # heard from within its deadline (a partition)
}

# Who a node is: answered to the coordinator's hello.
struct NodeInfo {
  nodeId @0 :Text;
  pid @1 :UInt32;
  memoryBudgetBytes @2 :UInt64;
  cpuShare @3 :Float64;         # 0: not throttled in-process
  clockUs @4 :Int64;            # the node's clock when it answered
  models @5 :List(Text);        # models this node can build
  keptBytes @6 :UInt64;         # replicas and committed states it keeps for jobs
  keptStates @7 :UInt32;        # ... how many (one per job, layer range and round)
  refusedControl @8 :UInt64;    # control messages and spawns refused: not from an
                                # authenticated coordinator (docs/security.md)
  refusedConnections @9 :UInt64;  # TLS handshakes its gateway refused
}

struct TraceEvent {
  kind @0 :Kind;
  stage @1 :UInt32;
  member @2 :UInt32;
  round @3 :UInt64;
  microbatch @4 :UInt32;
  startUs @5 :Int64;
  endUs @6 :Int64;
  bytes @7 :UInt64;
  codec @8 :UInt8;              # send: the wire codec of its tensor (0 fp32, 1 fp16, 2 bf16, 3 int8, 4 int4)

  enum Kind {
    forward @0;
    backward @1;
    send @2;
    receive @3;
    allReduce @4;
    optimizerStep @5;
    idle @6;
  }
}

# Per-round report from a member to the coordinator (with `done`).
struct Metrics {
  stage @0 :UInt32;
  member @1 :UInt32;
  round @2 :UInt64;
  events @3 :List(TraceEvent);
  peakMemoryBytes @4 :UInt64;
  computeUs @5 :UInt64;         # wall time of its forwards and backwards in this round
}

struct Error {
  code @0 :Code;
  message @1 :Text;

  enum Code {
    invalidMessage @0;    # could not decode or validate what was received
    invalidRequest @1;    # well-formed but not acceptable (unknown model, ...)
    outOfMemory @2;       # the assignment does not fit the memory budget
    internal @3;          # a bug or an unexpected exception
    disconnected @4;      # a peer vanished
  }
}

# Node -> coordinator: per-layer profile of a model on this node, under its
# own emulation (profile.json content as JSON text).
struct ProfileRequest {
  model @0 :Text;
  batches @1 :List(UInt32);
  repeats @2 :UInt32;
}

struct ProfileResult {
  json @0 :Text;
}

# To the planner actor: plan (or re-plan) a model on a cluster. The inputs
# travel as the JSON texts of FORMATS.md, so any tool can produce them.
struct PlanRequest {
  clusterJson @0 :Text;
  profileJson @1 :Text;
  strategy @2 :Text;            # hpp | dp | pp
  batch @3 :UInt32;
  microbatches @4 :UInt32;      # 0: search the divisors of batch
  optimizer @5 :OptimizerSpec.Kind;
  runningPlanJson @6 :Text;     # re-plan: the plan in force ...
  lostDevices @7 :List(Text);   # ... and the devices lost since
  addedDevices @8 :List(Text);  # ... or added
  heavy @9 :Bool;               # re-plan by full search, not lightweight
  wire @10 :Text;               # wire policy: exact (empty) | fp16 | int8 | int4 | auto
  codecBlock @11 :UInt32 = 64;  # values per int8/int4 scale
  rank @12 :Text;               # a job's first plan: model | simulated (planner/rank.h); empty: the strategy's plan
  minGain @13 :Float64;         # with rank: a cluster plan must beat the best device alone by this fraction
}

struct PlanResult {
  planJson @0 :Text;            # empty when no plan fits; see `reason`. With rank: the whole plan.json
  reason @1 :Text;
  explanation @2 :Text;         # the --explain table
  singlePlanJson @3 :Text;      # with rank: the best device alone (the job's baseline), if it fits
}

# To a node: the replica it holds of a stage's state (answered with a
# stageState, or an error when it holds none for that round).
struct ReplicaRequest {
  jobId @0 :Text;
  layerBegin @1 :UInt32;
  layerEnd @2 :UInt32;
  round @3 :UInt64;
}

struct LayerRange {
  begin @0 :UInt32;
  end @1 :UInt32;
}

# To a node: of job `jobId`, only the replicas and committed states of the
# layer ranges in `keep` are still needed (the running plan's); the others
# (a superseded plan's) go. An empty `keep`: the job finished, all of its go.
# Answered with a nodeInfo (whose keptBytes is what the node keeps now).
struct Release {
  jobId @0 :Text;
  keep @1 :List(LayerRange);
}

# A node's answer to a keptRequest: every state it keeps of the job.
struct KeptEntry {
  layerBegin @0 :UInt32;
  layerEnd @1 :UInt32;
  round @2 :UInt64;
  committed @3 :Bool;   # a stage's committed state (else a replica)
}

struct Peer {
  deviceId @0 :Text;
  host @1 :Text;
  port @2 :UInt16;
  heartbeatKey @3 :Data;  # with TLS: the key of the heartbeats between the job's
                          # nodes (actors/heartbeat_datagram.h); empty otherwise
}

# To a node: a TorchScript model (docs/custom-models.md) that its nodeInfo
# does not list, with the data fields of what it trains on. The node checks
# that the bytes hash to sha256 and hold the chain layerNames lists, then
# registers the model under `name` and answers with its nodeInfo (which
# lists it from then on), or with an error naming what is wrong.
struct ModelFile {
  name @0 :Text;             # "<stem>@<first 12 hex digits of sha256>"
  sha256 @1 :Text;
  bytes @2 :Data;            # the file torch.jit.save wrote
  layerNames @3 :List(Text); # the children, in chain order
  tokens @4 :Bool;           # int64 token ids (else float32 samples)
  sampleShape @5 :List(Int64);
  numClasses @6 :Int64;
  dataset @7 :Text;          # the data set's key (compute/tensor_dataset.h)
}

struct Envelope {
  union {
    activation @0 :Activation;
    gradient @1 :Gradient;
    reduceChunk @2 :ReduceChunk;
    assignment @3 :StageAssignment;
    stageState @4 :StageState;
    control @5 :RoundControl;
    heartbeat @6 :Heartbeat;
    nodeInfo @7 :NodeInfo;
    metrics @8 :Metrics;
    error @9 :Error;
    profileRequest @10 :ProfileRequest;
    profileResult @11 :ProfileResult;
    hello @12 :Void;           # coordinator -> node: who are you? (NodeInfo)
    stateRequest @13 :UInt64;  # coordinator -> member: your StageState (committed round)
    planRequest @14 :PlanRequest;
    planResult @15 :PlanResult;
    linkProbe @16 :Data;       # coordinator -> node: bytes to time the link;
                               # the node answers with an empty linkProbe
    replicaRequest @17 :ReplicaRequest;
    peers @18 :List(Peer);     # coordinator -> node: connect to these nodes
                               # now (answered with an empty peers), so
                               # stage traffic goes direct from the start
    release @19 :Release;
    keptRequest @20 :Text;     # to a node: which states of this job do you
                               # keep? (a resume looks for newer ones than
                               # its checkpoint); answered with keptList
    keptList @21 :List(KeptEntry);
    modelFile @22 :ModelFile;
  }
  authorization @23 :Data;     # a coordinator's control capability for the node
                               # it talks to (actors/tls.h); empty otherwise
}
