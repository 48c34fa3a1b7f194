// The buffer side of dispatch. See buffer_glue.hpp.
#include "rpc/buffer_glue.hpp"

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <map>

namespace sealrpc::detail {
namespace asio = boost::asio;

// One timer per connection, armed for the earliest expiry (as DeadlineQueue): a release
// never touches it; it may then fire early, expires nothing and re-arms for the new
// earliest. With one lease length, each new lease ends last, so the timer is set about
// once per lease period instead of twice per transfer (allocation, timerfd_settime).
struct LeaseTable::Impl : std::enable_shared_from_this<LeaseTable::Impl> {
  using clock = std::chrono::steady_clock;
  struct Entry {
    SealedBuffer buf;
    clock::time_point expiry;
  };
  asio::steady_timer timer;
  std::map<std::pair<std::uint32_t, std::uint8_t>, Entry> entries;  // bounded by max_leased_buffers
  clock::time_point armed = clock::time_point::max();  // expiry of the pending wait

  explicit Impl(asio::any_io_executor e) : timer(std::move(e)) {}
  void erase(std::pair<std::uint32_t, std::uint8_t> key) {
    auto it = entries.find(key);
    if (it == entries.end()) return;
    it->second.buf.revoke();  // wipe now, even if a revoker elsewhere is still around
    entries.erase(it);
  }
  void arm(clock::time_point t) {
    armed = t;
    timer.expires_at(t);  // cancels the previous wait, whose handler then does nothing
    timer.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      if (ec) return;
      if (auto impl = w.lock()) impl->expire();
    });
  }
  void expire() {  // wipes every lease that ran out; re-arms for the next one
    armed = clock::time_point::max();
    const auto now = clock::now();
    auto next = clock::time_point::max();
    for (auto it = entries.begin(); it != entries.end();) {
      if (it->second.expiry <= now) {
        it->second.buf.revoke();
        it = entries.erase(it);
      } else {
        next = std::min(next, it->second.expiry);
        ++it;
      }
    }
    if (next != clock::time_point::max()) arm(next);
  }
};

LeaseTable::LeaseTable(asio::any_io_executor ex) : impl_(std::make_shared<Impl>(std::move(ex))) {}
LeaseTable::~LeaseTable() { clear(); }

void LeaseTable::add(std::uint32_t rid, std::uint8_t index, SealedBuffer buf, std::chrono::milliseconds lease) {
  const auto key = std::make_pair(rid, index);
  impl_->erase(key);
  const auto expiry = Impl::clock::now() + lease;
  impl_->entries.emplace(key, Impl::Entry{std::move(buf), expiry});
  if (expiry < impl_->armed) impl_->arm(expiry);
}

void LeaseTable::release(std::uint32_t rid, std::uint8_t index) { impl_->erase({rid, index}); }

void LeaseTable::clear() noexcept {
  auto entries = std::move(impl_->entries);
  impl_->entries.clear();
  for (auto& [key, e] : entries) e.buf.revoke();
  impl_->armed = Impl::clock::time_point::max();
  impl_->timer.cancel();
}

std::size_t LeaseTable::size() const noexcept { return impl_->entries.size(); }

bool BufferQuota::try_charge(uid_t uid, std::uint64_t bytes, std::size_t buffers, const char** why) noexcept {
  std::lock_guard lock(mu_);
  const auto it = used_.find(uid);
  const Usage cur = it == used_.end() ? Usage{} : it->second;
  // cur never exceeds the limits, so the subtractions cannot wrap.
  if (cur.buffers > max_buffers_ || buffers > max_buffers_ - cur.buffers) {
    *why = "too many client buffers held for this uid";
    return false;
  }
  if (cur.bytes > max_bytes_ || bytes > max_bytes_ - cur.bytes) {
    *why = "too many client buffer bytes held for this uid";
    return false;
  }
  if (bytes == 0 && buffers == 0) return true;
  try {
    Usage& u = it == used_.end() ? used_[uid] : it->second;
    u.bytes += bytes;
    u.buffers += buffers;
  } catch (...) {  // no memory for the map node
    *why = "out of memory";
    return false;
  }
  return true;
}

void BufferQuota::release(uid_t uid, std::uint64_t bytes, std::size_t buffers) noexcept {
  if (bytes == 0 && buffers == 0) return;
  std::lock_guard lock(mu_);
  const auto it = used_.find(uid);
  if (it == used_.end()) return;  // cannot happen: every release follows its charge
  it->second.bytes -= std::min(bytes, it->second.bytes);
  it->second.buffers -= std::min(buffers, it->second.buffers);
  if (it->second.bytes == 0 && it->second.buffers == 0) used_.erase(it);
}

BufferQuota::Usage BufferQuota::usage(uid_t uid) const {
  std::lock_guard lock(mu_);
  const auto it = used_.find(uid);
  return it == used_.end() ? Usage{} : it->second;
}

std::size_t BufferQuota::uids() const {
  std::lock_guard lock(mu_);
  return used_.size();
}

void QuotaCharge::add(std::uint64_t bytes, std::size_t buffers) {
  const char* why = "";
  if (!quota_) throw std::logic_error("QuotaCharge without a quota");
  if (!quota_->try_charge(uid_, bytes, buffers, &why)) throw QuotaExceeded(why);
  bytes_ += bytes;
  buffers_ += buffers;
}

void QuotaCharge::reset() noexcept {
  if (quota_) quota_->release(uid_, std::exchange(bytes_, 0), std::exchange(buffers_, 0));
  quota_.reset();
}

wire::OutOfLineOptions out_of_line_options(const ServerOptions& o) {
  return {o.out_of_line_threshold, std::min<std::uint64_t>(o.max_out_of_line_bytes, limits::kMaxOutOfLineBytes)};
}
wire::OutOfLineOptions out_of_line_options(const ClientOptions& o) {
  return {o.out_of_line_threshold, std::min<std::uint64_t>(o.max_out_of_line_bytes, limits::kMaxOutOfLineBytes)};
}

IncomingMessage take_request(wire::Frame& f, const ServerOptions& o, CallBuffers& bufs,
                             const std::shared_ptr<BufferQuota>& quota, uid_t uid, QuotaCharge& charge) {
  const auto max = out_of_line_options(o).max_bytes;
  if (!f.fds.empty()) {
    // Charged before anything is read or mapped (M9): every memfd the call keeps open,
    // and the out-of-line message's announced size (verified to equal the memfd's
    // before it is read; an oversized one is refused by decoding, unread, so not
    // charged here and reported as INVALID_ARGUMENT, not as a quota refusal).
    charge = QuotaCharge(quota, uid);
    const std::uint64_t ool = wire::announced_out_of_line_size(f);
    charge.add(ool <= max ? ool : 0, f.fds.size());
  }
  // Clients are untrusted owners: only immutable memfds are parsed in place.
  IncomingMessage msg = wire::decode_frame_message(f, o.request_limits, max);
  BufferPolicy policy;
  policy.accept_immutable = o.accept_immutable_buffers;
  policy.accept_revocable = o.accept_revocable_buffers;
  policy.copy_revocable = true;
  policy.copy_sparse = true;
  policy.max_bytes = max;
  bufs.in = IncomingBuffers(std::move(f.fds), policy);
  // Verified sizes (fstat only, no I/O): charged before the handler can map or copy
  // any of them. Whole sizes, however sparse: a handler reading a hole faults in a page.
  if (bufs.in.count() != 0) charge.add(bufs.in.total_bytes(), 0);
  return msg;
}

wire::EncodedFrame encode_response(std::uint32_t rid, capnp::MessageBuilder& results, const ServerOptions& o,
                                   CallBuffers& bufs, LeaseTable& leases, std::vector<std::byte> reuse) {
  std::size_t revocable = 0;
  for (const auto& b : bufs.out) revocable += b.kind() == BufferKind::owner_revocable;
  if (leases.size() + revocable > o.max_leased_buffers) throw std::length_error("too many buffers held by this client");
  std::vector<UniqueFd> fds;
  for (const auto& b : bufs.out) fds.push_back(b.dup_fd());
  wire::FrameHeader h;
  h.type = wire::FrameType::response;
  h.request_id = rid;
  auto frame = wire::encode_frame(h, results, out_of_line_options(o), std::move(fds), std::move(reuse));
  for (std::size_t i = 0; i < bufs.out.size(); ++i) {
    if (bufs.out[i].kind() != BufferKind::owner_revocable) continue;
    const auto lease = bufs.out[i].lease().count() > 0 ? bufs.out[i].lease() : o.buffer_lease;
    leases.add(rid, static_cast<std::uint8_t>(i), std::move(bufs.out[i]), lease);
  }
  bufs.out.clear();  // immutable ones: the receiver's fd keeps the pages; we drop ours
  return frame;
}

wire::EncodedFrame encode_request(wire::FrameHeader h, capnp::MessageBuilder& msg, const ClientOptions& o,
                                  const std::vector<SealedBuffer>& bufs, std::vector<std::byte> reuse) {
  std::vector<UniqueFd> fds;
  for (const auto& b : bufs) fds.push_back(b.dup_fd());
  return wire::encode_frame(h, msg, out_of_line_options(o), std::move(fds), std::move(reuse));
}

std::pair<IncomingMessage, IncomingBuffers> take_response(wire::Frame& f, const ClientOptions& o,
                                                          std::function<void(std::uint8_t)> on_release,
                                                          std::shared_ptr<buffers::MappingCache> cache) {
  const auto max = out_of_line_options(o).max_bytes;
  // If decoding fails, the fds still in f.fds close with the frame; tell the owner so
  // it can wipe its revocable buffers at once instead of at lease expiry.
  const std::size_t ool = (f.header.flags & wire::kFlagOutOfLine) ? 1 : 0;
  const std::size_t n = f.fds.size() >= ool ? f.fds.size() - ool : 0;
  try {
    IncomingMessage msg = wire::decode_frame_message(f, o.reply_limits, max);
    BufferPolicy policy;
    policy.max_bytes = max;
    return {std::move(msg), IncomingBuffers(std::move(f.fds), policy, std::move(on_release), std::move(cache))};
  } catch (...) {
    if (on_release)
      for (std::size_t i = 0; i < n; ++i) on_release(static_cast<std::uint8_t>(i));
    throw;
  }
}

}  // namespace sealrpc::detail
