/*
 * authz_int.h - private to src/authz: the syntax tree shared by the compiler
 * (authz_compile.c) and the evaluator (authz_eval.c). docs/internals/authz.md.
 */
#ifndef TS_AUTHZ_INT_H
#define TS_AUTHZ_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authz.h"

/* Static types are sets of runtime kinds: a literal has one, a path has all of them. */
enum {
    TY_NULL = 1u << 0,
    TY_BOOL = 1u << 1,
    TY_INT = 1u << 2,
    TY_REAL = 1u << 3,
    TY_STR = 1u << 4,
    TY_LIST = 1u << 5,
    TY_OBJ = 1u << 6,
    TY_NUM = TY_INT | TY_REAL,
    TY_ANY = 0x7f,
};

enum node_op {
    OP_NULL,
    OP_BOOL,
    OP_INT,
    OP_REAL,
    OP_STR,
    OP_LIST,   /* kids: the elements */
    OP_ROOT,   /* v.root */
    OP_MEMBER, /* kids[0] . v.str (a key) */
    OP_INDEX,  /* kids[0] [v.i] (an array index) */
    OP_NOT,
    OP_NEG,
    OP_AND,
    OP_OR,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_IN,
    OP_ADD,
    OP_SUB,
    OP_CALL, /* v.fn (enum fn), kids: the arguments */
};

/* In the order of TS_PRED_USES_* (bit 1 << root). */
enum root {
    ROOT_IDENTITY,
    ROOT_CLAIMS,
    ROOT_RESOURCE,
    ROOT_OLD,
    ROOT_NEW,
    ROOT_REQUEST,
    ROOT_NOW,
};

enum fn {
    FN_STARTS_WITH,
    FN_ENDS_WITH,
    FN_CONTAINS,
    FN_LOWER,
    FN_SIZE,
    FN_HAS,
    FN_GET,
    FN_EXISTS,
    FN_LOOKUP,
};

struct node {
    uint8_t op;     /* enum node_op */
    uint8_t type;   /* TY_* set: what evaluation can produce */
    uint16_t nkids; /* entries of kids */
    uint32_t line;  /* where the expression starts, from 1 */
    uint32_t column;
    union {
        bool b;
        int64_t i;
        double r;
        int root; /* enum root */
        int fn;   /* enum fn */
    } v;
    const char *str; /* OP_STR, OP_MEMBER: NUL-terminated, str_len bytes (no NUL inside) */
    size_t str_len;
    struct node **kids;
};

struct ts_pred {
    struct ts_arena arena; /* every node and string of the predicate */
    struct node *root;
    struct ts_pred_limits lim;
    unsigned uses; /* TS_PRED_USES_* */
};

#endif
