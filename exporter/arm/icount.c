/*
 * icount: a QEMU TCG plugin counting executed guest instructions (aarch64 guests).
 *
 * Counters (all per process; keep the guest single-threaded, they are plain adds):
 *   insns   every executed instruction
 *   dot     SDOT/UDOT, vector and by-element forms (int8 dot product)
 *   mmla    SMMLA/UMMLA/USMMLA (int8 matrix multiply, i8mm)
 *   fmla    FMLA, single/double-precision vector and by-element forms
 *   smlal   SMLAL/SMLAL2/UMLAL/UMLAL2 vector (widening multiply-add, the pre-dot-product int8 path)
 *
 * Each translated block adds its instruction count (and the number of classified instructions of
 * each class it contains) with inline adds at block entry, so counting costs no helper calls.
 * Whenever the guest makes the getppid syscall (173 on aarch64) a snapshot of all counters is
 * taken: bracketing a piece of guest code with two getppid calls measures exactly that code.
 * At exit the snapshots are written, one line each, to the file given as `out=PATH`:
 *   insns dot mmla fmla smlal
 * Usage: qemu-aarch64 -plugin libicount.so,out=/tmp/counts.txt PROGRAM
 *
 * Optional profile (where the instructions go): `hist=PATH,hist_from=A,hist_to=B` also counts the
 * executions of every translated block and writes, at exit, one line per block address executed
 * between snapshot A and snapshot B (0-based marker numbers):
 *   vaddr(hex) instructions-per-execution executions
 * (a block translated more than once appears once per translation; sum by address). Without
 * hist= the plugin does exactly what it did without it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

/* Written against the plugin API of QEMU 7.x/8.x (version 1): QEMU 9 changed qemu_plugin_insn_data
 * and replaced the inline counters by per-vCPU scoreboards. */
#if QEMU_PLUGIN_VERSION != 1
#error "icount.c needs the QEMU 7.x/8.x plugin API (QEMU_PLUGIN_VERSION 1)"
#endif

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { C_INSNS, C_DOT, C_MMLA, C_FMLA, C_SMLAL, N_COUNTERS };

#define SYS_GETPPID_AARCH64 173
#define MAX_SNAPSHOTS 100000

static uint64_t counters[N_COUNTERS];
static uint64_t (*snapshots)[N_COUNTERS];
static size_t n_snapshots;
static int overflowed;
static char *out_path;

/* The optional per-block profile: records never move (inline adds point into them). */
struct block {
    uint64_t vaddr, n_insns, count, at_from, at_to;
};
#define BLOCKS_PER_CHUNK 65536
static struct block **chunks;
static size_t n_chunks, n_blocks;
static char *hist_path;
static long hist_from = -1, hist_to = -1;

static struct block *new_block(void)
{
    if (n_blocks == n_chunks * BLOCKS_PER_CHUNK) {
        chunks = realloc(chunks, (n_chunks + 1) * sizeof(*chunks));
        chunks[n_chunks] = calloc(BLOCKS_PER_CHUNK, sizeof(struct block));
        if (!chunks[n_chunks]) {
            abort();
        }
        n_chunks++;
    }
    struct block *b = &chunks[n_blocks / BLOCKS_PER_CHUNK][n_blocks % BLOCKS_PER_CHUNK];
    n_blocks++;
    return b;
}

static void hist_mark(size_t snapshot)
{
    if ((long)snapshot != hist_from && (long)snapshot != hist_to) {
        return;
    }
    for (size_t i = 0; i < n_blocks; i++) {
        struct block *b = &chunks[i / BLOCKS_PER_CHUNK][i % BLOCKS_PER_CHUNK];
        if ((long)snapshot == hist_from) {
            b->at_from = b->count;
        }
        if ((long)snapshot == hist_to) {
            b->at_to = b->count;
        }
    }
}

/* One A64 encoding class: (word & mask) == value. */
struct pattern {
    uint32_t mask, value;
    int counter;
};

static const struct pattern patterns[] = {
    /* SDOT/UDOT (vector):     0 Q U 01110 10 0 Rm 100101 Rn Rd */
    {0x9FE0FC00u, 0x0E809400u, C_DOT},
    /* SDOT/UDOT (by element): 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd */
    {0x9FC0F400u, 0x0F80E000u, C_DOT},
    /* SMMLA/UMMLA:            0 1 U 01110 100 Rm 101001 Rn Rd */
    {0xDFE0FC00u, 0x4E80A400u, C_MMLA},
    /* USMMLA:                 0 1 0 01110 100 Rm 101011 Rn Rd */
    {0xFFE0FC00u, 0x4E80AC00u, C_MMLA},
    /* FMLA (vector, S/D):     0 Q 0 01110 0 sz 1 Rm 110011 Rn Rd */
    {0xBFA0FC00u, 0x0E20CC00u, C_FMLA},
    /* FMLA (by element, S/D): 0 Q 0 01111 1 sz L M Rm 0001 H 0 Rn Rd */
    {0xBF80F400u, 0x0F801000u, C_FMLA},
    /* SMLAL/UMLAL{2} (vector): 0 Q U 01110 size 1 Rm 100000 Rn Rd */
    {0x9F20FC00u, 0x0E208000u, C_SMLAL},
};

static int classify(uint32_t word)
{
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
        if ((word & patterns[i].mask) == patterns[i].value) {
            return patterns[i].counter;
        }
    }
    return -1;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t per_class[N_COUNTERS] = {0};
    size_t n = qemu_plugin_tb_n_insns(tb);

    per_class[C_INSNS] = n;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word;
        if (qemu_plugin_insn_size(insn) != sizeof(word)) {
            continue;
        }
        memcpy(&word, qemu_plugin_insn_data(insn), sizeof(word));
        int c = classify(word);
        if (c >= 0) {
            per_class[c]++;
        }
    }
    for (int c = 0; c < N_COUNTERS; c++) {
        if (per_class[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counters[c],
                                                     per_class[c]);
        }
    }
    if (hist_path) {
        struct block *b = new_block();
        b->vaddr = qemu_plugin_tb_vaddr(tb);
        b->n_insns = n;
        /* Translated after snapshot A: its executions before it count from zero. */
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                       uint64_t a8)
{
    if (num != SYS_GETPPID_AARCH64) {
        return;
    }
    if (n_snapshots == MAX_SNAPSHOTS) {
        overflowed = 1;
        return;
    }
    if (hist_path) {
        hist_mark(n_snapshots);
    }
    memcpy(snapshots[n_snapshots++], counters, sizeof(counters));
}

static void write_hist(void)
{
    FILE *f = fopen(hist_path, "w");
    if (!f) {
        perror(hist_path);
        return;
    }
    int reached = hist_to >= 0 && (size_t)hist_to < n_snapshots;
    for (size_t i = 0; i < n_blocks; i++) {
        struct block *b = &chunks[i / BLOCKS_PER_CHUNK][i % BLOCKS_PER_CHUNK];
        /* A block first translated after B has at_to 0 and at_from 0: nothing in the window. */
        uint64_t end = reached ? b->at_to : b->count;
        if (end > b->at_from) {
            fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n_insns, end - b->at_from);
        }
    }
    fclose(f);
}

static void plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    FILE *f = fopen(out_path, "w");
    if (!f) {
        perror(out_path);
        return;
    }
    for (size_t i = 0; i < n_snapshots; i++) {
        fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", snapshots[i][C_INSNS],
                snapshots[i][C_DOT], snapshots[i][C_MMLA], snapshots[i][C_FMLA], snapshots[i][C_SMLAL]);
    }
    if (overflowed) {
        fprintf(f, "overflow\n");
    }
    fclose(f);
    if (hist_path) {
        write_hist();
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else if (strncmp(argv[i], "hist=", 5) == 0) {
            hist_path = strdup(argv[i] + 5);
        } else if (strncmp(argv[i], "hist_from=", 10) == 0) {
            hist_from = strtol(argv[i] + 10, NULL, 10);
        } else if (strncmp(argv[i], "hist_to=", 8) == 0) {
            hist_to = strtol(argv[i] + 8, NULL, 10);
        } else {
            fprintf(stderr, "icount: unknown argument %s (expected out=PATH, hist=PATH, hist_from=N, hist_to=N)\n",
                    argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "icount: missing out=PATH\n");
        return -1;
    }
    if (strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "icount: aarch64 guests only, not %s\n", info->target_name);
        return -1;
    }
    snapshots = calloc(MAX_SNAPSHOTS, sizeof(*snapshots));
    if (!snapshots) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
