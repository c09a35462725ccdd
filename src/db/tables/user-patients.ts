export interface UserPatientsTable {
  user_id: string;
  patient_id: string;
}
