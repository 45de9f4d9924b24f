/* The one CPU feature probe of the compiled kernels.
 *
 * CNNCORE_X86_TARGETS is 1 where the compiler can build functions for AVX2 + FMA through target
 * attributes (GCC or clang on x86); the kernels' AVX2 loops are compiled only then. The probes say
 * at run time whether this CPU has a feature; without CNNCORE_X86_TARGETS they say 0, and the
 * kernels keep their baseline loops. Python reads them through cnncore._cpu.
 */
#ifndef CNNCORE_CPU_FEATURES_H
#define CNNCORE_CPU_FEATURES_H

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define CNNCORE_X86_TARGETS 1
static inline int cnncore_cpu_avx2(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx2"); }
static inline int cnncore_cpu_fma(void) { __builtin_cpu_init(); return __builtin_cpu_supports("fma"); }
static inline int cnncore_cpu_avx512f(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx512f"); }
#else
#define CNNCORE_X86_TARGETS 0
static inline int cnncore_cpu_avx2(void) { return 0; }
static inline int cnncore_cpu_fma(void) { return 0; }
static inline int cnncore_cpu_avx512f(void) { return 0; }
#endif

#endif
