// A backend for the manager tests: x86-64 spaces with their free space
// indexed (indexed_page_table), each owning its table and its index's nodes,
// so world<indexed_x86_backend> runs the manager over indexed spaces.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "asreloc/paging/indexed_page_table.hpp"
#include "world.hpp"

namespace asreloc::test {

struct indexed_x86_backend {
    using inner = x86_backend::space;

    // The table and the nodes, made before the index that refers to them.
    struct owned_parts {
        std::unique_ptr<inner> owned_table;
        std::vector<gap_index::node> owned_nodes;
    };

    class space : private owned_parts, public indexed_page_table<inner> {
    public:
        explicit space(std::unique_ptr<inner> table)
            : owned_parts{std::move(table), std::vector<gap_index::node>(4096)},
              indexed_page_table<inner>(index(*owned_table, owned_nodes)) {}

    private:
        static indexed_page_table<inner> index(inner& table, std::vector<gap_index::node>& nodes) {
            auto made = indexed_page_table<inner>::over(table, nodes);
            REQUIRE(made.has_value());
            return std::move(*made);
        }
    };

    static constexpr const char* name = "x86-64 indexed";
    static std::unique_ptr<space> make(world_allocator& a, world_memory& m) {
        return std::make_unique<space>(x86_backend::make(a, m));
    }
};

}  // namespace asreloc::test
