# Options for host-side programs of this project (tests, benches, hosted
# examples): warnings, and the sanitizers chosen by ASRELOC_SANITIZE. Kernel
# code and the freestanding checks never get these.
function(asreloc_host_options target)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion)
    if(ASRELOC_SANITIZE)
        list(JOIN ASRELOC_SANITIZE "," sanitizers)
        target_compile_options(${target} PRIVATE
            -fsanitize=${sanitizers} -fno-sanitize-recover=all -fno-omit-frame-pointer)
        target_link_options(${target} PRIVATE -fsanitize=${sanitizers})
    endif()
endfunction()
