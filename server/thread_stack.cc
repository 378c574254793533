// SPDX-License-Identifier: Apache-2.0
// Thread stacks that fit their creators' intent despite large thread-local storage.
//
// glibc carves every thread's static TLS (the PT_TLS segments of the executable and of every
// library loaded at startup) out of the thread's stack. A library that creates threads with a
// small fixed stack therefore gets less than it asked for, and nothing at all once the TLS grows:
// civetweb (the /metrics HTTP server, ours and prometheus-cpp's) asks for 100 KB, while
// OpenBLAS alone has 60 KB of TLS and the CUDA runtime 8 KB more, so its workers overflowed their
// stacks on the first scrape (https://sourceware.org/bugzilla/show_bug.cgi?id=11787).
//
// This definition, in the aaren-server executable, takes precedence over libc's for every
// library (symbol interposition) and adds the static TLS size to each requested stack size, so
// a thread gets the usable stack it asked for. It only ever enlarges a request.
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <cstddef>

namespace {

int AddTls(dl_phdr_info* info, size_t, void* total) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_TLS) *static_cast<size_t*>(total) += ph.p_memsz + ph.p_align;
  }
  return 0;
}

// Static TLS of the objects loaded at startup (an upper bound: alignment padding included).
size_t StaticTlsBytes() {
  static const size_t bytes = [] {
    size_t total = 0;
    dl_iterate_phdr(&AddTls, &total);
    return total;
  }();
  return bytes;
}

using SetStackSize = int (*)(pthread_attr_t*, size_t);

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  static const SetStackSize libc_set =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return libc_set(attr, size + StaticTlsBytes());
}
