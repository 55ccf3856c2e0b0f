// A blob that needs a relocation: a pointer in initialised data. blobtool must
// refuse it, or a parasite like it would jump through an unrelocated address.
extern "C" {
static int value = 42;
int* volatile pointer_in_data = &value;
__attribute__((used)) int bad_entry() { return *pointer_in_data; }
}
