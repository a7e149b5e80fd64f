// The demo kernels' monitor mechanics (monitor.hpp).
#include "monitor.hpp"

#include <new>
#include <utility>

#include <asreloc/x86_64/descriptors.hpp>

#include "kernel.hpp"
#include "serial.hpp"

namespace bare_metal {
namespace {

using asreloc::attributes;
using asreloc::page_size;
using asreloc::phys_addr;
using asreloc::virt_addr;
using asreloc::virt_range;
namespace x64 = asreloc::x86_64;

constexpr std::uint64_t mib2 = std::uint64_t{1} << 21;
constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

// The stub's frames are these pages of the kernel image: physically
// contiguous, and the monitor reaches them at a fixed address however the
// stub moves in the two spaces.
stub_image the_stub;

alignas(16) std::uint8_t monitor_stack[65536];
alignas(pool_type) std::byte pool_storage[sizeof(pool_type)];
alignas(space_type) std::byte monitor_storage[sizeof(space_type)];
alignas(space_type) std::byte guest_storage[sizeof(space_type)];
monitor_state state;

std::uint64_t stub_address_of(const void* p, virt_addr placement) noexcept {
    return placement.value() + static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(p) -
                                                          reinterpret_cast<const std::uint8_t*>(&the_stub));
}

// The monitor's view (through the kernel image) of a frame on the stub's
// stack, or null when the frame is elsewhere: a trap taken in the monitor
// itself stays on the monitor's stack.
guest_frame* through_kernel_image(guest_frame* at_placement, virt_addr placement) noexcept {
    const auto offset = reinterpret_cast<std::uint64_t>(at_placement) - placement.value();
    if (offset >= stub_bytes) return nullptr;
    return reinterpret_cast<guest_frame*>(reinterpret_cast<std::uint8_t*>(&the_stub) + offset);
}

[[noreturn]] void resume(guest_frame& f) noexcept {
    const virt_addr at = state.placement;
    const auto exit = at.value() + stub_code_offset + static_cast<std::uint64_t>(stub_exit - stub_code_start);
    stub_resume(reinterpret_cast<guest_frame*>(stub_address_of(&f, at)), exit);
}

extern "C" [[noreturn]] void monitor_entry(guest_frame* at_placement) noexcept;

// The router's address-space switch for slow routes. The stub's entry code
// has already loaded the monitor space (it must, before anything of the
// monitor is reachable) and its exit loads the guest space again (it must,
// because the monitor may have moved the stub, and the code that called
// dispatch, meanwhile). So the hooks switch nothing: one checks, the other
// leaves the switch back to stub_exit.
void monitor_space_is_loaded(void*) noexcept {
    if (read_cr3() != state.monitor_space->root().value()) fail("slow path outside the monitor space");
}
void switch_back_at_stub_exit(void*) noexcept {}

}  // namespace

monitor_state& monitor() noexcept { return state; }
stub_image& stub() noexcept { return the_stub; }
std::uint64_t slow_traps() noexcept { return the_stub.data.router.slow_traps(); }
std::uint64_t fast_traps() noexcept { return the_stub.data.router.fast_traps(); }

phys_addr stub_frame(std::uint64_t page) noexcept {
    return phys_addr{reinterpret_cast<std::uint64_t>(&the_stub) - kernel_base + page * kib4};
}

phys_addr zeroed_frame() noexcept {
    const auto f = state.pool->allocate_frame();
    if (!f.has_value()) fail("out of frames");
    auto* q = phys_ptr<std::uint64_t>(*f);
    for (unsigned k = 0; k < kib4 / 8; ++k) q[k] = 0;
    return *f;
}

void map_or_fail(space_type& s, virt_range r, phys_addr pa, attributes a, page_size ps, const char* what) noexcept {
    const auto m = s.map(r, pa, a, ps);
    if (!m.has_value()) {
        serial::line("monitor: mapping ", what, " failed: ", asreloc::to_string(m.error_code()));
        fail("cannot map");
    }
    m->ignore();  // only not-present entries became present (map never replaces)
}

monitor_state& create_monitor(const physical_layout& layout, const char* code_begin, const char* code_end) noexcept {
    const phys_addr pool_start{align_up(layout.kernel_end.value(), mib2)};
    std::uint64_t frames = (layout.region_end - pool_start) / kib4;
    if (frames > 32768) frames = 32768;
    state.pool = new (pool_storage) pool_type(pool_start, frames);
    const auto& dm = direct_map();
    const auto mode = (read_cr4() & cr4_la57) ? x64::paging_mode::five_level : x64::paging_mode::four_level;
    auto m = space_type::create(*state.pool, dm, mode);
    auto g = space_type::create(*state.pool, dm, mode);
    if (!m.has_value() || !g.has_value()) fail("page_table::create failed");
    state.monitor_space = new (monitor_storage) space_type(std::move(m).value());
    state.guest_space = new (guest_storage) space_type(std::move(g).value());

    map_or_fail(*state.monitor_space, virt_range::of(virt_addr{kernel_base}, align_up(layout.kernel_end.value(), mib2)),
                phys_addr{0}, attributes{.writable = true, .executable = true}, page_size::size_2m, "the kernel image");
    map_or_fail(*state.monitor_space, virt_range::of(virt_addr{direct_map_base}, align_up(layout.ram_end.value(), mib2)),
                phys_addr{0}, asreloc::read_write, page_size::size_2m, "the direct map");

    const phys_addr code = zeroed_frame();
    const auto guest_bytes = static_cast<std::uint64_t>(code_end - code_begin);
    if (guest_bytes > kib4) fail("the guest code does not fit one page");
    for (std::uint64_t k = 0; k < guest_bytes; ++k) phys_ptr<char>(code)[k] = code_begin[k];
    map_or_fail(*state.guest_space, virt_range::of(virt_addr{guest_code_va}, kib4), code,
                attributes{.user = true, .executable = true}, page_size::size_4k, "guest code");
    map_or_fail(*state.guest_space, virt_range::of(virt_addr{guest_stack_va}, kib4), zeroed_frame(),
                asreloc::user_read_write, page_size::size_4k, "guest stack");
    return state;
}

void build_stub(virt_addr at, const std::uint8_t* slow, unsigned slow_count, asreloc::trap_handler_fn handler,
                void* context) noexcept {
    const auto code_bytes = static_cast<std::uint64_t>(stub_code_end - stub_code_start);
    if (code_bytes > sizeof(the_stub.code)) fail("the stub code does not fit its page");
    for (std::uint64_t k = 0; k < code_bytes; ++k) the_stub.code[k] = static_cast<std::uint8_t>(stub_code_start[k]);

    auto& t = the_stub.tables;
    t = x64::stub_tables{};
    const std::uint64_t code_at = at.value() + stub_code_offset;
    for (unsigned v = 0; v < 256; ++v) {
        if (!stub_has_entry(v)) continue;
        const bool guest_callable = v == vector_fast_service || v == vector_hypercall;
        t.idt_gates[v] = x64::idt_gate::make(code_at + stub_entry_offset(v), x64::kernel_code_selector,
                                             x64::system_type::interrupt_gate,
                                             guest_callable ? x64::privilege_level::ring3 : x64::privilege_level::ring0);
    }
    t.place(at);
    x64::task_state_segment tss = t.tss;
    tss.rsp[0] = at.value() + stub_stack_top;
    t.tss = tss;

    auto* data = new (&the_stub.data) stub_data{};
    data->monitor_cr3 = state.monitor_space->root().value();
    data->guest_cr3 = state.guest_space->root().value();
    data->monitor_entry = reinterpret_cast<std::uint64_t>(&monitor_entry);
    data->monitor_stack = reinterpret_cast<std::uint64_t>(monitor_stack + sizeof(monitor_stack));
    data->router.set_address_space_switch({&monitor_space_is_loaded, &switch_back_at_stub_exit, nullptr});
    // stub.S indexes the route table at the start of the router.
    if (reinterpret_cast<const std::byte*>(&data->router.table()) != reinterpret_cast<const std::byte*>(&data->router))
        fail("the trap router does not start with its route table");
    const auto fast = code_at + static_cast<std::uint64_t>(reinterpret_cast<const char*>(&stub_fast_service) -
                                                           stub_code_start);
    data->router.route_fast(vector_fast_service, reinterpret_cast<asreloc::trap_handler_fn>(fast), nullptr);
    for (unsigned k = 0; k < slow_count; ++k) data->router.route_slow(slow[k], handler, context);
    state.placement = at;
}

void map_stub(space_type& s, virt_addr at) noexcept {
    for (std::uint64_t p = 0; p < stub_pages; ++p)
        map_or_fail(s, virt_range::of(at + p * kib4, kib4), stub_frame(p), stub_page_attributes(p), page_size::size_4k,
                    "the stub");
}

void load_stub_registers() noexcept {
    auto& t = the_stub.tables;
    t.gdt.tss.set_type(x64::system_type::tss_available);
    const x64::pseudo_descriptor gdtr = t.gdtr, idtr = t.idtr;
    load_descriptor_tables(gdtr.base, idtr.base);
}

void enter_guest(std::uint64_t rdi, std::uint64_t rsi, std::uint64_t rdx) noexcept {
    auto* f = reinterpret_cast<guest_frame*>(the_stub.stack + sizeof(the_stub.stack) - sizeof(guest_frame));
    *f = guest_frame{};
    f->trap.rip = guest_code_va;
    f->trap.cs = user_code;
    f->trap.rflags = 0x202;  // IF: the timer reaches the guest
    f->trap.rsp = guest_stack_va + kib4;
    f->trap.ss = user_data;
    f->rdi = rdi;
    f->rsi = rsi;
    f->rdx = rdx;
    resume(*f);
}

namespace {

extern "C" [[noreturn]] void monitor_entry(guest_frame* at_placement) noexcept {
    const virt_addr entered_at = state.placement;
    guest_frame* const seen = through_kernel_image(at_placement, entered_at);
    if (seen == nullptr || !seen->from_user()) {
        const guest_frame& m = seen != nullptr ? *seen : *at_placement;
        serial::line("monitor: fault in the monitor: vector=", m.trap.vector, " error=", serial::hex{m.trap.error_code},
                     " rip=", serial::hex{m.trap.rip}, " cr2=", serial::hex{m.trap.fault_address});
        fail("fault in the monitor");
    }
    guest_frame& f = *seen;
    auto& router = the_stub.data.router;
    const auto& e = router.table()[static_cast<std::uint8_t>(f.trap.vector)];
    if (e.route != asreloc::trap_route::slow) {
        // Fast routes come here only when their handler reflected, reflect
        // routes always: this guest has no handlers of its own to reflect to.
        serial::line("monitor: guest trap not ours: vector=", f.trap.vector, " error=",
                     serial::hex{f.trap.error_code}, " rip=", serial::hex{f.trap.rip}, " cr2=",
                     serial::hex{f.trap.fault_address});
        fail("unexpected guest trap");
    }
    if (router.dispatch(f.trap) != asreloc::trap_outcome::resume_guest) fail("a slow handler reflected a trap");
    // The stub may have moved meanwhile: the CPU's copies of its registers follow.
    if (state.placement != entered_at) load_stub_registers();
    resume(f);
}

}  // namespace
}  // namespace bare_metal
