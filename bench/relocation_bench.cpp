// Relocation: waits for include/asreloc/manager/relocation_manager.hpp.
#include "support/bench_context.hpp"

namespace asreloc::bench {

void register_relocation(bench_context&) {}

}  // namespace asreloc::bench
