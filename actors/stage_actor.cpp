#include "actors/stage_actor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <caf/all.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <optional>

#include "actors/all_reduce.h"
#include "actors/node_context.h"
#include "actors/optimizer_spec.h"
#include "actors/routing.h"
#include "actors/state_store.h"
#include "planner/schedule.h"
#include "compute/dataset.h"
#include "compute/stage_model.h"
#include "messages/tensor_codec.h"
#include "messages/transport.h"

namespace asteroid::actors {
namespace {

// Values per all-reduce bucket (1 MiB of float32; the bucket holding the
// first parameters may be smaller).
constexpr int64_t kBucketValues = int64_t{1} << 18;

using messages::Activation;
using planner::OneFOneB;
using planner::Op;
using messages::Gradient;
using messages::Message;
using messages::ReduceChunk;
using messages::RoundControl;
using messages::StageAssignment;
using messages::TraceEvent;
using messages::TraceKind;
using messages::WireMessage;

// The slices of one micro-batch that a member is waiting for, by the sample
// range they carry (in micro-batch coordinates).
struct Assembly {
  std::map<uint32_t, std::pair<Range, at::Tensor>> pieces;  // by begin
  std::map<uint32_t, at::Tensor> labels;                    // by begin
  uint32_t covered = 0;

  // Adds a slice; false if it overlaps one already received (a duplicate).
  bool add(Range range, at::Tensor tensor, at::Tensor slice_labels) {
    auto next = pieces.lower_bound(range.begin);
    if (next != pieces.end() && next->second.first.begin < range.end) return false;
    if (next != pieces.begin() && std::prev(next)->second.first.end > range.begin) return false;
    pieces.emplace(range.begin, std::make_pair(range, std::move(tensor)));
    if (slice_labels.defined()) labels.emplace(range.begin, std::move(slice_labels));
    covered += range.size();
    return true;
  }
  at::Tensor tensor() const {
    std::vector<at::Tensor> parts;
    for (const auto& [begin, piece] : pieces) parts.push_back(piece.second);
    return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
  }
  at::Tensor all_labels() const {
    std::vector<at::Tensor> parts;
    for (const auto& [begin, l] : labels) parts.push_back(l);
    if (parts.empty()) return {};
    return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
  }
};

using messages::now_us;

uint64_t peak_rss_bytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmHWM: %lu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib * 1024;
}

std::vector<uint32_t> samples_of(const std::vector<messages::GroupMember>& group) {
  std::vector<uint32_t> samples;
  for (const auto& m : group) samples.push_back(m.samples);
  return samples;
}

class StageMember {
 public:
  StageMember(caf::blocking_actor* self, std::shared_ptr<NodeContext> node)
      : self_(self), node_(std::move(node)) {
    node_->add_stage(self_->address());
  }

  ~StageMember() {
    if (reserved_bytes_ > 0) node_->release(reserved_bytes_);
    node_->remove_stage(self_->address());
  }

  void run() {
    bool running = true;
    self_->receive_while([&] { return running && !failed_; })(
        [&](WireMessage& wire, std::vector<caf::actor>& prev, std::vector<caf::actor>& group,
            std::vector<caf::actor>& next, std::vector<caf::actor>& holder, caf::actor& coordinator) -> WireMessage {
          auto reply = deploy(std::move(wire), std::move(prev), std::move(group), std::move(next), std::move(holder),
                              std::move(coordinator));
          if (!model_) running = false;  // refused: nothing to do here
          pump();
          return reply;
        },
        [&](WireMessage& wire) {
          on_envelope(wire);
          pump();
        },
        [&](caf::down_msg& down) {
          if (down.source == coordinator_.address()) {
            spdlog::info("stage {}.{}: coordinator gone ({}), leaving", a_.stage, a_.member, to_string(down.reason));
            running = false;
          }
        },
        [&](caf::exit_msg& exit) {
          self_->fail_state(exit.reason);
          running = false;
        });
    // Failed on its own: its node (the device supervisor) restarts it.
    if (failed_) self_->fail_state(caf::exit_reason::unhandled_exception);
  }

  // ------------------------------------------------------------- deployment

  // Deploys this member, or re-deploys it after a re-plan: with the same
  // model and layers and no initial state, it keeps its weights, rolled back
  // to its last committed round (which must be first_round - 1).
  WireMessage deploy(WireMessage&& wire, std::vector<caf::actor> prev, std::vector<caf::actor> group,
                     std::vector<caf::actor> next, std::vector<caf::actor> holder, caf::actor coordinator) {
    auto decoded = messages::from_wire(std::move(wire));
    if (!decoded.ok()) return error(messages::ErrorCode::invalid_message, decoded.error);
    auto* assignment = std::get_if<StageAssignment>(&*decoded.message);
    if (!assignment) {
      return error(messages::ErrorCode::invalid_request,
                   std::string("expected a stage assignment, got ") + messages::kind_name(*decoded.message));
    }
    if (!node_->authorized(decoded.authorization, "assign a stage")) return refused("assignments");
    StageAssignment a = std::move(*assignment);
    node_->crash_point("assign", a.first_round, /*or_later=*/true);
    if (a.resume_from_kept) {
      // A restart in place: the node kept this stage's committed state.
      auto kept = node_->kept(a.job_id, a.layer_begin, a.layer_end, a.first_round - 1);
      if (!kept) {
        return error(messages::ErrorCode::invalid_request,
                     "node " + node_->node_id + " keeps no committed state of layers [" +
                         std::to_string(a.layer_begin) + ", " + std::to_string(a.layer_end) + ") at round " +
                         std::to_string(a.first_round - 1));
      }
      a.initial_state = std::move(*kept);
    }
    if (prev.size() != a.prev_group.size() || group.size() != a.group.size() || next.size() != a.next_group.size() ||
        holder.size() > 1 || !coordinator) {
      return error(messages::ErrorCode::invalid_request, "actor handles do not match the assignment's groups");
    }
    const bool keep = model_ && a.model == a_.model && a.layer_begin == a_.layer_begin &&
                      a.layer_end == a_.layer_end && a.initial_state.weights.empty();
    if (keep) {
      if (states_.committed_round() + 1 != static_cast<int64_t>(a.first_round)) {
        return error(messages::ErrorCode::invalid_request,
                     "asked to go on from round " + std::to_string(a.first_round) +
                         " but the last committed round here is " + std::to_string(states_.committed_round()));
      }
      restore(states_.committed());
      if (a.group.size() != a_.group.size() || a.member != a_.member || a.codec_all_reduce != a_.codec_all_reduce) {
        states_.committed().feedback.clear();  // another ring: the residuals' slots mean other chunks
        feedback_.clear();
      }
    } else {
      std::unique_ptr<compute::StageModel> model;
      feedback_.clear();
      try {
        model = std::make_unique<compute::StageModel>(a.model, static_cast<int>(a.layer_begin),
                                                      static_cast<int>(a.layer_end), a.seed, a.optimizer);
        if (!a.initial_state.weights.empty()) load_state(*model, a.initial_state);
        if (a.stage == 0 && !data_) data_ = node_->training_data(a.model);
        if (a.stage != 0) node_->prefetch_training_data(a.model);
      } catch (const std::exception& e) {
        return error(messages::ErrorCode::invalid_request, e.what());
      }
      // What this member holds for sure: weights, gradients and optimizer
      // state, plus the committed and uncommitted copies. The planner's
      // estimate (activations, replicas) is usually larger.
      const uint64_t k_opt = static_cast<uint64_t>(a.optimizer.kind);  // 0 sgd, 1 momentum, 2 adam
      const uint64_t held = static_cast<uint64_t>(model->parameter_bytes()) * (4 + 3 * k_opt);
      const uint64_t needed = std::max(a.required_memory_bytes, held);
      node_->release(reserved_bytes_);
      reserved_bytes_ = 0;
      std::string why;
      if (!node_->reserve(needed, &why)) {
        model_.reset();
        return error(messages::ErrorCode::out_of_memory, why);
      }
      reserved_bytes_ = needed;
      model_ = std::move(model);
      states_.reset(static_cast<int64_t>(a.first_round) - 1, snapshot(static_cast<int64_t>(a.first_round) - 1));
    }
    a_ = std::move(a);
    if (states_.committed_round() >= 0) node_->keep_committed(state_of(states_.committed()));
    a_.initial_state = {};  // loaded; no second copy
    ring_ = Ring{static_cast<uint32_t>(a_.group.size()), a_.member};
    buckets_.reset();
    if (a_.group.size() > 1) buckets_.emplace(model_->parameter_sizes(), kBucketValues);
    prev_ = std::move(prev);
    group_ = std::move(group);
    next_ = std::move(next);
    holder_ = holder.empty() ? caf::actor() : holder.front();
    if (coordinator_) self_->demonitor(coordinator_);
    coordinator_ = std::move(coordinator);
    self_->monitor(coordinator_);
    my_range_ = member_ranges(samples_of(a_.group))[a_.member];
    prev_ranges_ = member_ranges(samples_of(a_.prev_group));
    next_ranges_ = member_ranges(samples_of(a_.next_group));
    states_.forget_uncommitted();
    deferred_.clear();
    started_through_ = static_cast<int64_t>(a_.first_round) - 1;
    begin_round(a_.first_round);
    spdlog::debug("stage {}.{} deployed on {}: layers [{}, {}) from round {}", a_.stage, a_.member, node_->node_id,
                  a_.layer_begin, a_.layer_end, a_.first_round);
    node_->supervise(caf::actor_cast<caf::actor>(self_), coordinator_, a_.stage, a_.member);
    return messages::to_wire(node_->info());
  }

  // An empty blob (a stage without parameters) is an empty tensor, not an
  // undefined one.
  static at::Tensor copy_of(const messages::TensorBlob& blob) {
    const at::Tensor t = messages::to_tensor(blob);
    return t.defined() ? t.clone() : at::empty({0}, at::kFloat);
  }

  static void load_state(compute::StageModel& model, const messages::StageState& state) {
    model.set_flat_weights(copy_of(state.weights));
    model.optimizer().load_state(copy_of(state.optimizer_state), static_cast<int64_t>(state.optimizer_steps));
  }

  // ------------------------------------------------------------- messages

  // Handles one envelope. Only requests get a reply; a problem with an
  // asynchronous message goes to the coordinator instead (replying to a peer
  // stage could make two stages bounce errors at each other).
  void on_envelope(WireMessage& wire) {
    const bool is_request = self_->current_mailbox_element()->mid.is_request();
    std::optional<WireMessage> reply;
    auto decoded = messages::from_wire(std::move(wire));
    if (!decoded.ok()) {
      reply = error(messages::ErrorCode::invalid_message, decoded.error);
      if (!is_request) fail("dropped an undecodable message: " + decoded.error);
    } else if (is_request &&
               !node_->authorized(decoded.authorization, std::string("answer a ") + messages::kind_name(*decoded.message))) {
      // A request (a state request: the stage's weights) is the
      // coordinator's, through an asker of its own (actors/ask.h): its
      // sender says nothing, the control token does.
      reply = refused(std::string(messages::kind_name(*decoded.message)) + " requests");
    } else if (!model_) {
      reply = error(messages::ErrorCode::invalid_request, "stage not deployed yet");
    } else if (!is_request && !self_->current_sender() && carries_data(*decoded.message)) {
      // Data whose sender CAF cannot name: this node has no route to the
      // peer that sent it (seen after restarts on env C: every redeploy
      // stalled the same round). The stage cannot take it, and waiting would
      // stall the round again on every replay: the device counts as lost.
      ++dropped_;
      if (!reported_unattributed_) {
        reported_unattributed_ = true;
        report(messages::ErrorCode::disconnected,
               std::string("received a ") + messages::kind_name(*decoded.message) +
                   " whose sender CAF cannot name (no route to the peer that sent it)");
      }
    } else if (failed_ && carries_data(*decoded.message)) {
      ++stale_;  // this member failed: it computes nothing more and leaves
    } else if (carries_data(*decoded.message) && deployment_of(*decoded.message) != a_.deployment) {
      // Data a peer sent under an earlier deployment (for a round a
      // recovery aborted) reaching a member kept in place: it would mix
      // with the replay's. Expected after every restart in place.
      ++stale_;
      spdlog::debug("stage {}.{} on {}: dropped a {} of deployment {} (this is {}; {} so far)", a_.stage, a_.member,
                    node_->node_id, messages::kind_name(*decoded.message), deployment_of(*decoded.message),
                    a_.deployment, stale_);
    } else if (!is_request && !from_this_deployment(self_->current_sender())) {
      // A stage of an earlier plan (a node that was frozen and thawed), or
      // anyone else: its data must not mix with this round's.
      ++dropped_;
      spdlog::warn("stage {}.{} on {}: dropped a {} from {}, which is not part of this deployment ({} so far)",
                   a_.stage, a_.member, node_->node_id, messages::kind_name(*decoded.message),
                   caf::to_string(self_->current_sender()), dropped_);
    } else {
      try {
        reply = std::visit([this](auto& m) { return on(m); }, *decoded.message);
      } catch (const std::exception& e) {
        fail(e.what());
        reply = error(messages::ErrorCode::internal, e.what());
      }
    }
    if (is_request && reply) self_->make_response_promise<WireMessage>().deliver(std::move(*reply));
  }

  bool from_this_deployment(const caf::strong_actor_ptr& sender) const {
    if (!sender) return false;
    const caf::actor_addr from = caf::actor_cast<caf::actor_addr>(sender);
    auto among = [&](const std::vector<caf::actor>& list) {
      return std::any_of(list.begin(), list.end(), [&](const caf::actor& a) { return a.address() == from; });
    };
    return from == coordinator_.address() || (holder_ && from == holder_.address()) || among(prev_) ||
           among(group_) || among(next_);
  }

  std::optional<WireMessage> on(Activation& m) {
    if (!accept_round(m.round, &m)) return std::nullopt;
    record(TraceKind::receive, m.microbatch, now_us(), now_us(), m.tensor.bytes + m.tensor.scale_bytes + m.labels.bytes);
    auto& assembly = inputs_[m.microbatch];
    if (!assembly.add({m.samples.begin, m.samples.end}, messages::to_float_tensor(m.tensor),
                      messages::to_tensor(m.labels))) {
      throw std::runtime_error("duplicate activation slice for micro-batch " + std::to_string(m.microbatch));
    }
    if (assembly.covered == my_range_.size()) rule_->forward_ready(static_cast<int>(m.microbatch));
    return std::nullopt;
  }

  std::optional<WireMessage> on(Gradient& m) {
    if (!accept_round(m.round, &m)) return std::nullopt;
    record(TraceKind::receive, m.microbatch, now_us(), now_us(), m.tensor.bytes + m.tensor.scale_bytes);
    auto& assembly = gradients_[m.microbatch];
    if (!assembly.add({m.samples.begin, m.samples.end}, messages::to_float_tensor(m.tensor), {})) {
      throw std::runtime_error("duplicate gradient slice for micro-batch " + std::to_string(m.microbatch));
    }
    if (assembly.covered == my_range_.size()) rule_->backward_ready(static_cast<int>(m.microbatch));
    return std::nullopt;
  }

  std::optional<WireMessage> on(ReduceChunk& m) {
    if (!accept_round(m.round, &m)) return std::nullopt;
    if (!buckets_ || m.bucket >= buckets_->buckets().size() || m.step >= ring_.steps()) {
      throw std::runtime_error("all-reduce chunk for bucket " + std::to_string(m.bucket) + " step " +
                               std::to_string(m.step) + ": this ring has " +
                               std::to_string(buckets_ ? buckets_->buckets().size() : 0) + " buckets of " +
                               std::to_string(ring_.steps()) + " steps");
    }
    chunks_received_.emplace(std::make_pair(m.bucket, m.step), std::move(m.tensor));
    if (reducing_) advance_all_reduce();
    return std::nullopt;
  }

  std::optional<WireMessage> on(RoundControl& m) {
    switch (m.kind) {
      case messages::ControlKind::start:
        // Only the first stage waits for starts; the others run on what
        // arrives. A start may come ahead of its round (rounds overlap):
        // the round then begins as soon as this member has stepped the
        // one before.
        if (a_.stage > 0) break;
        started_through_ = std::max(started_through_, static_cast<int64_t>(m.round));
        if (m.round == round_) release_first_forwards();
        break;
      case messages::ControlKind::commit: {
        const bool fresh = states_.committed_round() != static_cast<int64_t>(m.round);
        if (!states_.commit(m.round)) {
          throw std::runtime_error("asked to commit round " + std::to_string(m.round) + " that did not finish here");
        }
        if (fresh) node_->keep_committed(state_of(states_.committed()));
        break;
      }
      case messages::ControlKind::abort:
        roll_back();
        break;
      case messages::ControlKind::replicate: {
        // Replication runs beside the rounds: the coordinator asks for one
        // stepped round at a time, the same round from every member, when
        // the previous replica is stored. Every member keeps that round's
        // state until it commits; a single-device stage ships it.
        const Snapshot* state = states_.keep(m.round);
        if (!state) throw std::runtime_error("asked to replicate round " + std::to_string(m.round) + ", which is not kept here");
        if (!holder_) break;
        node_->crash_point("replicate", m.round, /*or_later=*/true);
        send(holder_, state_of(*state), 0);
        break;
      }
      case messages::ControlKind::replicated: {
        // The holder stored our replica: tell the coordinator, which commits
        // a round only once its replicas are safe.
        RoundControl forwarded = m;
        forwarded.stage = a_.stage;
        forwarded.member = a_.member;
        self_->send(coordinator_, messages::to_wire(forwarded));
        break;
      }
      case messages::ControlKind::done:
      case messages::ControlKind::restarted:
        throw std::runtime_error("a stage accepts no done or restarted messages");
    }
    return std::nullopt;
  }

  // The state after `round` if this member has it (committed or stepped),
  // else its last committed state; the caller checks the round.
  std::optional<WireMessage> on(messages::StateRequest& m) {
    node_->crash_point("state", m.round, /*or_later=*/true);
    const Snapshot* state = states_.find(m.round);
    return messages::to_wire(state_of(state ? *state : states_.committed()));
  }

  template <typename Other>
  std::optional<WireMessage> on(Other& m) {
    return error(messages::ErrorCode::invalid_request,
                 std::string("a stage does not accept ") + messages::kind_name(Message{m}) + " messages");
  }

  // Messages of the round after this one can arrive before this member saw
  // the commit (they come over other connections): keep them for later.
  // Messages of older rounds belong to an aborted round: drop them.
  template <typename M>
  bool accept_round(uint64_t round, M* message) {
    if (round == round_) return true;
    if (round == round_ + 1) deferred_.emplace_back(std::move(*message));
    return false;
  }

  void replay_deferred() {
    auto deferred = std::move(deferred_);
    deferred_.clear();
    for (auto& message : deferred) std::visit([this](auto& m) { on(m); }, message);
  }

  // ------------------------------------------------------------- the round

  void begin_round(uint64_t round) {
    round_ = round;
    rule_.emplace(static_cast<int>(a_.stage), static_cast<int>(a_.stage_count), static_cast<int>(a_.microbatches));
    released_ = false;
    inputs_.clear();
    gradients_.clear();
    labels_.clear();
    chunks_received_.clear();
    rings_.assign(buckets_ ? buckets_->buckets().size() : 0, BucketRing{});
    if (buckets_) buckets_->reset();
    flat_ = at::Tensor();
    reducing_ = false;
    loss_sum_ = 0;
    samples_ = 0;
    correct_ = 0;
    compute_us_ = 0;
    events_.clear();
    if (a_.stage == 0 && static_cast<int64_t>(round) <= started_through_) release_first_forwards();
  }

  // First stage: every micro-batch of the round is ready to go forward.
  void release_first_forwards() {
    if (released_) return;
    released_ = true;
    for (uint32_t mb = 0; mb < a_.microbatches; ++mb) rule_->forward_ready(static_cast<int>(mb));
  }

  // Drops every round not committed and restores the last committed state;
  // the next round waits for a new start.
  void roll_back() {
    restore(states_.committed());
    states_.forget_uncommitted();
    deferred_.clear();
    started_through_ = states_.committed_round();
    begin_round(static_cast<uint64_t>(states_.committed_round() + 1));
  }

  // Weights and optimizer state after round `round` (-1: before round 0).
  // (The all-reduce's error-feedback residuals belong to the round too; they
  // stay on this member and are not part of the stage's replicated state.)
  struct Snapshot {
    int64_t round = -1;
    at::Tensor weights, optimizer;
    int64_t steps = 0;
    wire_codec::ErrorFeedback::Residuals feedback;
  };

  Snapshot snapshot(int64_t round) const {
    return {round, model_->flat_weights().clone(), model_->optimizer().state().clone(), model_->optimizer().steps(),
            feedback_.residuals()};
  }

  void restore(const Snapshot& s) {
    model_->drop_all();
    model_->zero_gradients();
    model_->set_flat_weights(s.weights.clone());
    model_->optimizer().load_state(s.optimizer.clone(), s.steps);
    feedback_.restore(s.feedback);
  }

  messages::StageState state_of(const Snapshot& s) const {
    messages::StageState state;
    state.round = static_cast<uint64_t>(std::max<int64_t>(s.round, 0));
    state.layer_begin = a_.layer_begin;
    state.layer_end = a_.layer_end;
    state.weights = messages::to_blob(s.weights);
    state.optimizer_state = messages::to_blob(s.optimizer);
    state.optimizer_steps = static_cast<uint64_t>(s.steps);
    state.job_id = a_.job_id;
    return state;
  }

  // Runs every op the 1F1B rule allows now. Between two ops the mailbox is
  // drained (receive with a zero timeout), so a backward that arrived while
  // a forward ran goes first.
  void pump() {
    while (model_ && rule_ && !failed_) {
      auto op = rule_->next();
      if (!op) return;
      try {
        if (op->kind == Op::Kind::forward) {
          run_forward(op->microbatch);
        } else {
          run_backward(op->microbatch);
        }
      } catch (const std::exception& e) {
        fail(e.what());
        return;
      }
      drain_mailbox();
    }
  }

  void drain_mailbox() {
    bool got = true;
    while (got) {
      got = false;
      self_->receive(
          [&](WireMessage& wire) {
            got = true;
            on_envelope(wire);
          },
          caf::after(std::chrono::seconds(0)) >> [] {});
    }
  }

  std::pair<at::Tensor, at::Tensor> first_stage_input(int mb) {
    const auto indices = compute::round_indices(data_->size(), a_.batch, a_.data_seed, static_cast<int64_t>(round_));
    const size_t offset = static_cast<size_t>(mb) * a_.microbatch_size;
    std::vector<int64_t> mine(indices.begin() + offset + my_range_.begin, indices.begin() + offset + my_range_.end);
    auto batch = data_->get(mine);
    return {batch.inputs, batch.labels};
  }

  // An activation or gradient slice of micro-batch `mb` from this member,
  // without its tensors.
  template <typename Data>
  Data outgoing(int mb, const Slice& slice) const {
    Data out;
    out.round = round_;
    out.microbatch = static_cast<uint32_t>(mb);
    out.samples = {slice.samples.begin, slice.samples.end};
    out.from_stage = a_.stage;
    out.from_member = a_.member;
    out.deployment = a_.deployment;
    return out;
  }


  void run_forward(int mb) {
    node_->crash_point("forward", round_);
    at::Tensor input, labels;
    if (a_.stage == 0) {
      std::tie(input, labels) = first_stage_input(mb);
    } else {
      const auto& assembly = inputs_.at(mb);
      input = assembly.tensor();
      labels = assembly.all_labels();
      inputs_.erase(mb);
    }
    const int64_t start = now_us();
    at::Tensor output = node_->throttle.run([&] { return model_->forward(mb, input); });
    const int64_t end = now_us();
    compute_us_ += end - start;
    record(TraceKind::forward, mb, start, end, 0);
    if (a_.stage + 1 == a_.stage_count) {
      labels_[mb] = labels;
      return;
    }
    for (const Slice& slice : route(my_range_, next_ranges_)) {
      auto out = outgoing<Activation>(mb, slice);
      const int64_t from = slice.samples.begin - my_range_.begin;
      out.tensor = messages::to_blob(output.narrow(0, from, slice.samples.size()), a_.codec_to_next, a_.codec_block);
      out.labels = messages::to_blob(labels.narrow(0, from, slice.samples.size()));
      send(next_[slice.member], out, mb);
    }
  }

  void run_backward(int mb) {
    node_->crash_point("backward", round_);
    const int64_t start = now_us();
    // The last backward of the round: each bucket's ring starts as soon as
    // its gradients are final (groups of more than one).
    compute::StageModel::GradientReady ready;
    if (a_.group.size() > 1 && mb + 1 == static_cast<int>(a_.microbatches)) {
      reduce_start_us_ = start;
      flat_ = at::empty({model_->parameter_count()}, at::kFloat);
      ready = [this](size_t parameter, const at::Tensor& total) { on_gradient_final(parameter, total); };
    }
    at::Tensor grad_input;
    if (a_.stage + 1 == a_.stage_count) {
      auto result = node_->throttle.run(
          [&] { return model_->backward_loss(mb, labels_.at(mb), static_cast<double>(a_.batch), ready); });
      labels_.erase(mb);
      loss_sum_ += result.loss_sum;
      correct_ += result.correct;
      samples_ += my_range_.size();
      grad_input = result.grad_input;
    } else {
      const at::Tensor grad = gradients_.at(mb).tensor();
      gradients_.erase(mb);
      grad_input = node_->throttle.run([&] { return model_->backward(mb, grad, ready); });
    }
    const int64_t end = now_us();
    compute_us_ += end - start;
    record(TraceKind::backward, mb, start, end, 0);
    if (a_.stage > 0) {
      for (const Slice& slice : route(my_range_, prev_ranges_)) {
        auto out = outgoing<Gradient>(mb, slice);
        out.tensor = messages::to_blob(grad_input.narrow(0, slice.samples.begin - my_range_.begin, slice.samples.size()),
                                       a_.codec_from_prev, a_.codec_block);
        send(prev_[slice.member], out, mb);
      }
    }
    if (rule_->finished()) start_all_reduce();
  }

  // ------------------------------------------------------------- all-reduce

  // Bucketed ring all-reduce over the group (actors/all_reduce.h): each
  // bucket is a ring of n-1 reduce-scatter steps, then n-1 all-gather
  // steps. Each chunk is summed once, in ring order, and then copied to
  // everyone, so all members end with bit-identical gradients.

  // During the last backward: a parameter's gradient is final; once its
  // whole bucket is, that bucket's ring starts (sends are asynchronous, so
  // they travel while the backward of earlier layers goes on).
  void on_gradient_final(size_t parameter, const at::Tensor& total) {
    flat_.narrow(0, buckets_->offset(parameter), buckets_->values(parameter)).copy_(total.reshape({-1}));
    if (auto bucket = buckets_->ready(parameter)) start_ring(*bucket);
  }

  void start_ring(size_t bucket) {
    rings_[bucket].started = true;
    send_chunk(bucket);
  }

  // After the last backward: the buckets whose rings started hold exactly
  // the final gradients (checked: a parameter used twice would break the
  // bucket rule), the others start now.
  void start_all_reduce() {
    if (a_.group.size() == 1) {
      reduce_start_us_ = now_us();
      flat_ = model_->flat_gradients();
      finish_round();
      return;
    }
    const at::Tensor final = model_->flat_gradients();
    for (size_t b = 0; b < rings_.size(); ++b) {
      const auto& range = buckets_->buckets()[b];
      at::Tensor mine = flat_.narrow(0, range.begin, range.end - range.begin);
      const at::Tensor truth = final.narrow(0, range.begin, range.end - range.begin);
      if (!rings_[b].started) {
        mine.copy_(truth);
        start_ring(b);
      } else if (!at::equal(mine, truth)) {
        throw std::runtime_error("the gradients of all-reduce bucket " + std::to_string(b) +
                                 " changed after they were final (a parameter used twice in one backward?)");
      }
    }
    reducing_ = true;
    node_->crash_point("allreduce", round_);
    advance_all_reduce();
  }

  // What this member sends at its ring's step in `bucket`. In the
  // reduce-scatter, its partial sum of a chunk; at the first all-gather
  // step, the chunk it has finished reducing, which it also replaces by
  // what the others will decode, so every member ends with the same
  // values; afterwards, the chunk received at the step before, forwarded as
  // it came. A lossy codec encodes with error feedback, one slot per bucket
  // and step (the same chunk of the same parameters every round).
  void send_chunk(size_t bucket) {
    BucketRing& ring = rings_[bucket];
    const uint32_t n = ring_.n;
    ReduceChunk out;
    out.round = round_;
    out.bucket = static_cast<uint32_t>(bucket);
    out.step = ring.step;
    out.chunk = ring_.chunk_sent_at(ring.step);
    out.from_member = a_.member;
    out.deployment = a_.deployment;
    if (ring.step > n - 1) {
      out.tensor = ring.gathered;
    } else {
      at::Tensor values = chunk_of(bucket, out.chunk);
      if (a_.codec_all_reduce == wire_codec::Codec::fp32) {
        out.tensor = messages::to_blob(values);
      } else {
        const uint64_t slot = static_cast<uint64_t>(bucket) * ring_.steps() + ring.step;
        out.tensor = messages::to_blob(feedback_.encode(slot, a_.codec_all_reduce, values.data_ptr<float>(), 1,
                                                        static_cast<uint64_t>(values.numel()), a_.codec_block),
                                       {values.numel()});
        if (ring.step == n - 1) values.copy_(messages::to_float_tensor(out.tensor));
      }
    }
    send(group_[ring_.next()], out, 0);
  }

  at::Tensor chunk_of(size_t bucket, uint32_t chunk) {
    const auto& range = buckets_->buckets()[bucket];
    auto [begin, end] = ring_.chunk_bounds(chunk, range.end - range.begin);
    return flat_.narrow(0, range.begin + begin, end - begin);
  }

  // Takes every received chunk each started ring can use, in step order;
  // the round finishes when every ring has done its last step.
  void advance_all_reduce() {
    const uint32_t n = ring_.n;
    bool all_done = true;
    for (size_t b = 0; b < rings_.size(); ++b) {
      BucketRing& ring = rings_[b];
      while (ring.started && ring.step < ring_.steps()) {
        auto it = chunks_received_.find({static_cast<uint32_t>(b), ring.step});
        if (it == chunks_received_.end()) break;
        const uint32_t chunk = ring_.chunk_received_at(ring.step);
        at::Tensor target = chunk_of(b, chunk);
        const at::Tensor received = messages::to_float_tensor(it->second);
        if (received.numel() != target.numel()) {
          throw std::runtime_error("all-reduce bucket " + std::to_string(b) + " chunk " + std::to_string(chunk) +
                                   " has " + std::to_string(received.numel()) + " elements, expected " +
                                   std::to_string(target.numel()));
        }
        if (ring.step < n - 1) {
          target.add_(received);
        } else {
          target.copy_(received);
          ring.gathered = std::move(it->second);
        }
        chunks_received_.erase(it);
        if (++ring.step < ring_.steps()) send_chunk(b);
      }
      all_done = all_done && ring.step == ring_.steps();
    }
    if (!all_done) return;
    reducing_ = false;
    finish_round();
  }

  // After the all-reduce: step, keep the new state until the coordinator
  // commits it or it is too old to be asked for, report, and be ready for
  // the next round.
  void finish_round() {
    const int64_t step_start = now_us();
    record(TraceKind::all_reduce, 0, reduce_start_us_, step_start, a_.group.size() > 1 ? flat_.nbytes() : 0);
    node_->crash_point("step", round_);
    node_->throttle.run([&] { model_->apply_gradients(flat_); });
    flat_ = at::Tensor();
    const Snapshot& stepped = states_.stepped(round_, snapshot(static_cast<int64_t>(round_)));
    record(TraceKind::optimizer_step, 0, step_start, now_us(), 0);
    const uint64_t rounds_done = round_ + 1;
    if (a_.central_every > 0 && rounds_done % a_.central_every == 0) send(coordinator_, state_of(stepped), 0);
    messages::Metrics metrics;
    metrics.stage = a_.stage;
    metrics.member = a_.member;
    metrics.round = round_;
    metrics.events = std::move(events_);
    metrics.peak_memory_bytes = peak_rss_bytes();
    metrics.compute_us = static_cast<uint64_t>(std::max<int64_t>(compute_us_, 0));
    events_.clear();
    self_->send(coordinator_, messages::to_wire(metrics));
    RoundControl done;
    done.kind = messages::ControlKind::done;
    done.round = round_;
    done.loss_sum = loss_sum_;
    done.samples = samples_;
    done.correct = correct_;
    done.stage = a_.stage;
    done.member = a_.member;
    self_->send(coordinator_, messages::to_wire(done));
    begin_round(round_ + 1);
    replay_deferred();
  }

  // ------------------------------------------------------------- helpers

  void send(const caf::actor& to, const Message& message, int mb) {
    const int64_t start = now_us();
    WireMessage wire = messages::to_wire(message);
    const uint64_t bytes = wire.bytes.size();
    const auto* gradient = std::get_if<Gradient>(&message);
    if (gradient && node_->sends_anonymously("gradient", gradient->round)) {
      caf::anon_send(to, std::move(wire));  // fault injection: the receiver cannot tell who sent it
    } else {
      self_->send(to, std::move(wire));
    }
    wire_codec::Codec codec = wire_codec::Codec::fp32;
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Activation> || std::is_same_v<T, Gradient> ||
                        std::is_same_v<T, messages::ReduceChunk>) {
            if (const auto c = messages::codec_of(m.tensor.dtype)) codec = *c;
          }
        },
        message);
    record(TraceKind::send, mb, start, now_us(), bytes, codec);
  }

  void record(TraceKind kind, int mb, int64_t start, int64_t end, uint64_t bytes,
              wire_codec::Codec codec = wire_codec::Codec::fp32) {
    if (!a_.trace) return;
    TraceEvent e;
    e.kind = kind;
    e.stage = a_.stage;
    e.member = a_.member;
    e.round = round_;
    e.microbatch = static_cast<uint32_t>(mb);
    e.start_us = start;
    e.end_us = end;
    e.bytes = bytes;
    e.codec = codec;
    events_.push_back(e);
  }

  WireMessage error(messages::ErrorCode code, const std::string& what) const {
    return messages::to_wire(messages::Error{code, what});
  }
  // With TLS, a stage takes its assignment and answers requests only from
  // the coordinator (the node's control token in the envelope, as the
  // node itself checks, node_context.h).
  WireMessage refused(const std::string& what) const {
    return error(messages::ErrorCode::invalid_request,
                 "stage on node " + node_->node_id + " takes " + what + " only from an authenticated coordinator");
  }

  // It failed on its own (its compute threw, or it lost data it needed):
  // the member reports it once, computes nothing more and leaves with
  // unhandled_exception; its node restarts it in place (actors/node.h).
  void fail(const std::string& what) {
    if (failed_) return;
    failed_ = true;
    report(messages::ErrorCode::internal, what);
  }

  // Tells the coordinator: `internal` fails the stage (restarted in place
  // from the committed state), `disconnected` loses its device.
  void report(messages::ErrorCode code, const std::string& what) {
    spdlog::error("stage {}.{} on {}: {}", a_.stage, a_.member, node_->node_id, what);
    if (coordinator_) {
      self_->send(coordinator_, error(code, "stage " + std::to_string(a_.stage) + " member " +
                                                std::to_string(a_.member) + " on " + node_->node_id + ": " + what));
    }
  }

  static bool carries_data(const Message& m) {
    return std::holds_alternative<Activation>(m) || std::holds_alternative<Gradient>(m) ||
           std::holds_alternative<messages::ReduceChunk>(m);
  }
  // The deployment a data message was sent under (carries_data(m) holds).
  static uint64_t deployment_of(const Message& m) {
    return std::visit(
        [](const auto& data) -> uint64_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(data)>, Activation> ||
                        std::is_same_v<std::decay_t<decltype(data)>, Gradient> ||
                        std::is_same_v<std::decay_t<decltype(data)>, messages::ReduceChunk>) {
            return data.deployment;
          }
          return 0;
        },
        m);
  }

  caf::blocking_actor* self_;
  std::shared_ptr<NodeContext> node_;
  uint64_t reserved_bytes_ = 0;

  StageAssignment a_;
  std::unique_ptr<compute::StageModel> model_;
  std::shared_ptr<const compute::Dataset> data_;
  std::vector<caf::actor> prev_, group_, next_;
  uint64_t dropped_ = 0;  // messages from actors outside this deployment
  uint64_t stale_ = 0;    // data of an earlier deployment, or taken after a failure
  bool failed_ = false;   // see fail()
  bool reported_unattributed_ = false;  // data without a sender was reported (once per deployment)
  caf::actor coordinator_;
  Range my_range_;
  std::vector<Range> prev_ranges_, next_ranges_;

  // The round in progress.
  uint64_t round_ = 0;
  int64_t started_through_ = -1;  // first stage: the last round the coordinator started
  bool released_ = false;         // first stage: this round's forwards are released
  std::optional<OneFOneB> rule_;
  std::map<int, Assembly> inputs_, gradients_;
  std::map<int, at::Tensor> labels_;  // last stage: labels of forwarded micro-batches
  double loss_sum_ = 0;
  uint32_t samples_ = 0, correct_ = 0;
  std::vector<TraceEvent> events_;
  std::vector<Message> deferred_;

  // All-reduce: the group's ring, its buckets (groups of more than one),
  // each bucket's progress this round, and chunks by (bucket, step).
  struct BucketRing {
    bool started = false;
    uint32_t step = 0;
    messages::TensorBlob gathered;  // the all-gather chunk to forward
  };
  Ring ring_;
  std::optional<GradientBuckets> buckets_;
  std::vector<BucketRing> rings_;
  bool reducing_ = false;
  at::Tensor flat_;
  std::map<std::pair<uint32_t, uint32_t>, messages::TensorBlob> chunks_received_;
  wire_codec::ErrorFeedback feedback_;
  int64_t reduce_start_us_ = 0;
  int64_t compute_us_ = 0;  // forward and backward wall time of this round (Metrics.compute_us)

  // The committed state, the kept (replica) rounds and the newest stepped
  // ones (actors/state_store.h).
  StateStore<Snapshot> states_{-1, Snapshot{}};
  caf::actor holder_;  // the node that keeps this stage's replica, if any
};

}  // namespace

void stage_actor(caf::blocking_actor* self, std::shared_ptr<NodeContext> node) {
  at::set_num_threads(node->torch_threads);  // this thread computes (see NodeContext)
  StageMember member(self, std::move(node));
  member.run();
}

}  // namespace asteroid::actors
