// Catch binds what it checks to a reference; members of the packed SDM
// structures cannot be bound, so a test copies them out first.
#pragma once

namespace asreloc::test {

template <class T>
T copy_of(T v) {
    return v;
}

}  // namespace asreloc::test
