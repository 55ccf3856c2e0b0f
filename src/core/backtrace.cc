#include "core/backtrace.hpp"

#include <libunwind.h>

#include <cstring>

#include "arch/x86_64/core_regs.hpp"

// libunwind's own search of a binary's .eh_frame_hdr table, which its ptrace
// and coredump accessors call from their find_proc_info the same way; the
// public headers leave it undeclared, the library exports it.
extern "C" int _Ux86_64_dwarf_search_unwind_table(unw_addr_space_t as, unw_word_t ip, unw_dyn_info_t* di,
                                                  unw_proc_info_t* pi, int need_unwind_info, void* arg);

namespace minicriu {

namespace {

constexpr int kMaxFrames = 256;

// What the accessors below read: one thread's registers over its process's memory.
struct UnwindTarget {
  const ProcessMemory& memory;
  const ModuleMap& modules;
  const img::X86Regs& regs;
};

UnwindTarget& target(void* arg) { return *static_cast<UnwindTarget*>(arg); }

// Bytes of a DW_EH_PE-encoded value without an application part (the
// counts of an .eh_frame_hdr); 0 for an encoding this reader does not take.
unsigned encoded_size(uint8_t enc) {
  switch (enc & 0x0f) {
    case 0x03: case 0x0b: return 4;  // udata4, sdata4
    case 0x00: case 0x04: case 0x0c: return 8;  // absptr, udata8, sdata8
    default: return 0;
  }
}

// The binary search table of a module's .eh_frame_hdr (version 1; the table
// as GNU ld writes it: datarel sdata4 pairs), for dwarf_search_unwind_table.
bool unwind_table(const ProcessMemory& mem, const Module& m, unw_dyn_info_t& di) {
  uint8_t head[4];
  if (!m.eh_frame_hdr || !mem.read(m.eh_frame_hdr, head)) return false;
  constexpr uint8_t kDatarelSdata4 = 0x3b;
  unsigned ptr_size = encoded_size(head[1]), count_size = encoded_size(head[2]);
  if (head[0] != 1 || head[3] != kDatarelSdata4 || !ptr_size || !count_size || (head[2] & 0x70)) return false;
  uint64_t count_at = m.eh_frame_hdr + 4 + ptr_size;
  uint64_t fde_count = 0;
  if (!mem.read(count_at, std::span(reinterpret_cast<uint8_t*>(&fde_count), count_size))) return false;
  std::memset(&di, 0, sizeof(di));
  di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
  di.start_ip = m.start;
  di.end_ip = m.end;
  di.u.rti.segbase = m.eh_frame_hdr;
  di.u.rti.table_data = count_at + count_size;
  // In words: each entry is two 4-byte values.
  di.u.rti.table_len = fde_count * 8 / sizeof(unw_word_t);
  return true;
}

int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t* pi, int need_unwind_info, void* arg) {
  UnwindTarget& t = target(arg);
  const Module* m = t.modules.at(ip);
  unw_dyn_info_t di;
  if (!m || !unwind_table(t.memory, *m, di)) return -UNW_ENOINFO;
  return _Ux86_64_dwarf_search_unwind_table(as, ip, &di, pi, need_unwind_info, arg);
}

// dwarf_search_unwind_table keeps what it found in libunwind's own pool,
// which libunwind frees itself: nothing of ours to free.
void put_unwind_info(unw_addr_space_t, unw_proc_info_t*, void*) {}

int get_dyn_info_list_addr(unw_addr_space_t, unw_word_t*, void*) { return -UNW_ENOINFO; }

int access_mem(unw_addr_space_t, unw_word_t addr, unw_word_t* val, int write, void* arg) {
  if (write) return -UNW_EINVAL;  // the checkpoint is only read
  uint64_t v = 0;
  if (!target(arg).memory.read(addr, std::span(reinterpret_cast<uint8_t*>(&v), sizeof v))) return -UNW_EINVAL;
  *val = v;
  return 0;
}

int access_reg(unw_addr_space_t, unw_regnum_t reg, unw_word_t* val, int write, void* arg) {
  if (write) return -UNW_EREADONLYREG;
  auto v = arch::unwind_register(target(arg).regs, reg);
  if (!v) return -UNW_EBADREG;
  *val = *v;
  return 0;
}

int access_fpreg(unw_addr_space_t, unw_regnum_t, unw_fpreg_t*, int, void*) { return -UNW_EBADREG; }

int resume(unw_addr_space_t, unw_cursor_t*, void*) { return -UNW_EINVAL; }

unw_accessors_t kAccessors = {
    .find_proc_info = find_proc_info,
    .put_unwind_info = put_unwind_info,
    .get_dyn_info_list_addr = get_dyn_info_list_addr,
    .access_mem = access_mem,
    .access_reg = access_reg,
    .access_fpreg = access_fpreg,
    .resume = resume,
    .get_proc_name = nullptr,
};

// One libunwind address space, destroyed with its scope.
class AddressSpace {
 public:
  AddressSpace() : as_(unw_create_addr_space(&kAccessors, 0)) {}
  ~AddressSpace() {
    if (as_) unw_destroy_addr_space(as_);
  }
  AddressSpace(const AddressSpace&) = delete;
  AddressSpace& operator=(const AddressSpace&) = delete;
  unw_addr_space_t get() const { return as_; }

 private:
  unw_addr_space_t as_;
};

void name_frame(img::StackFrame& f, uint64_t lookup, const ModuleMap& modules) {
  Symbol s = modules.symbolize(lookup);
  if (!s.module) {
    f.clear_module(), f.clear_function(), f.clear_source_file(), f.clear_line(), f.clear_note();
    return;
  }
  f.set_module(s.module->name);
  f.set_module_offset(f.ip() - s.module->bias);
  f.set_note(s.module->note);
  f.set_function(s.function);
  f.set_function_offset(s.function_offset + (f.ip() - lookup));
  f.set_source_file(s.source_file);
  f.set_line(static_cast<uint32_t>(s.line));
}

}  // namespace

img::ThreadStack unwind_thread(const img::ThreadCore& thread, const ProcessMemory& memory, const ModuleMap& modules) {
  img::ThreadStack stack;
  stack.set_tid(thread.tid());
  UnwindTarget t{memory, modules, thread.regs()};
  AddressSpace as;
  unw_cursor_t cursor;
  if (!as.get()) {
    stack.set_stop_reason("libunwind could not make an address space");
    return stack;
  }
  if (int r = unw_init_remote(&cursor, as.get(), &t); r < 0) {
    stack.set_stop_reason(fmt::format("unwinding failed: {}", unw_strerror(r)));
    return stack;
  }
  for (int n = 0;; n++) {
    if (n == kMaxFrames) {
      stack.set_stop_reason(fmt::format("more than {} frames: the rest are left out", kMaxFrames));
      break;
    }
    unw_word_t ip = 0, sp = 0;
    unw_get_reg(&cursor, UNW_REG_IP, &ip);
    unw_get_reg(&cursor, UNW_REG_SP, &sp);
    if (ip == 0) break;  // the outermost frame's return address
    // libunwind says so of the frame a signal interrupted, whose registers
    // it took from the signal frame: the frame before it (the one it was
    // reached from) is the trampoline the handler returns to.
    bool interrupted = unw_is_signal_frame(&cursor) > 0;
    if (interrupted && n > 0) {
      // The handler "returned" to the trampoline's first instruction.
      img::StackFrame* trampoline = stack.mutable_frames(n - 1);
      trampoline->set_signal_frame(true);
      name_frame(*trampoline, trampoline->ip(), modules);
    }
    img::StackFrame* f = stack.add_frames();
    f->set_ip(ip);
    f->set_sp(sp);
    // A return address is just past its call, which may end its function;
    // the innermost frame's and an interrupted frame's ip is the next
    // instruction to run.
    name_frame(*f, n == 0 || interrupted ? ip : ip - 1, modules);
    int r = unw_step(&cursor);
    if (r == 0) break;
    if (r < 0) {
      stack.set_stop_reason(fmt::format("unwinding stopped: {}", unw_strerror(r)));
      break;
    }
    unw_word_t next_ip = 0, next_sp = 0;
    unw_get_reg(&cursor, UNW_REG_IP, &next_ip);
    unw_get_reg(&cursor, UNW_REG_SP, &next_sp);
    if (next_ip == ip && next_sp == sp) {
      stack.set_stop_reason("unwinding stopped: the stack loops");
      break;
    }
  }
  return stack;
}

std::string format_stack(const img::ThreadStack& stack, const std::string& indent) {
  std::string out;
  for (int i = 0; i < stack.frames_size(); i++) {
    const img::StackFrame& f = stack.frames(i);
    std::string what = !f.function().empty() ? fmt::format("{}+{:#x}", f.function(), f.function_offset())
                       : f.signal_frame()    ? "<signal handler called>"
                                             : "??";
    if (!f.source_file().empty()) what += fmt::format(" ({}:{})", f.source_file(), f.line());
    if (f.signal_frame() && !f.function().empty()) what += " <signal handler called>";
    if (!f.module().empty()) what += " in " + f.module();
    if (!f.note().empty()) what += ": " + f.note();
    out += fmt::format("{}#{:<2} {:#018x} {}\n", indent, i, f.ip(), what);
  }
  if (!stack.stop_reason().empty()) out += fmt::format("{}({})\n", indent, stack.stop_reason());
  return out;
}

}  // namespace minicriu
