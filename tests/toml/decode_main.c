/* decode_main.c: a stand-alone `toml-decode` for the toml-test runner and
 * the fuzzer corpus, built without the rest of the agent. */
#include "../../core/toml.h"

int main(void)
{
    return toml_decode_cmd(stdin, stdout, stderr);
}
